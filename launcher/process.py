"""One child process in its own session: start it, wait for a condition, stop it and its tree.

Both servers (TorchServe, the gateway) are started through `ChildProcess`, so they share one
way of being stopped: SIGTERM to the whole process group, SIGKILL after a grace period, then
a sweep of every descendant seen before the stop (in case one left the group).
"""

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import psutil

from launcher.errors import ProcessExited, ReadyTimeout

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
POLL_INTERVAL_S = 0.1


def _parent_death_signal() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGTERM the child if the launcher dies first.

    Without it a launcher killed with SIGKILL (or a test runner killed hard) would leave a
    JVM and its workers running with nobody to stop them. libc is loaded here, in the
    parent, so the hook itself only makes one system call between fork and exec.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return hook


def read_tail(paths: Sequence[Path], lines: int = 40) -> str:
    """The last `lines` lines of each existing file in `paths`, headed by its name."""
    parts = []
    for path in paths:
        if path.is_file():
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- last lines of {path} ---\n" + ("\n".join(text) or "(empty)"))
    return "\n".join(parts) if parts else "(no log written)"


class ChildProcess:
    """A command run in a new session (its own process group) with its output in a file.

    Args:
        name: a short name for messages ("TorchServe", "gateway").
        argv: the command.
        env: its whole environment.
        cwd: its working directory.
        output: where its stdout and stderr go; None inherits the launcher's.
        tail_files: the logs to show when it fails to start (defaults to `output`).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path | None = None,
        output: Path | None = None,
        tail_files: Sequence[Path] = (),
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.output = output
        self.tail_files = list(tail_files) or ([output] if output else [])
        self._proc: subprocess.Popen[bytes] | None = None
        self._output_file: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The child's pid (also its process group id), None before `start()`."""
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        """Start the command; returns at once (see `wait_until`)."""
        if self._proc is not None:
            raise RuntimeError(f"{self.name} was already started")
        if self.output is not None:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            self._output_file = self.output.open("ab")
        logger.debug("starting %s: %s", self.name, " ".join(self.argv))
        self._proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._output_file,
            stderr=subprocess.STDOUT if self._output_file else None,
            start_new_session=True,
            preexec_fn=_parent_death_signal(),
        )

    def returncode(self) -> int | None:
        """The exit status, or None while it runs (or before it started)."""
        return self._proc.poll() if self._proc else None

    def wait_until(self, condition: Callable[[], bool], *, timeout: float, what: str) -> None:
        """Poll `condition` until it holds, the child exits, or `timeout` seconds pass.

        Raises:
            ProcessExited: the child exited first; the message holds its log tail.
            ReadyTimeout: the deadline passed; the message holds its log tail.
        """
        if self._proc is None:
            raise RuntimeError(f"{self.name} was not started")
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise ProcessExited(
                    f"{self.name} exited with status {code} before {what}\n"
                    + read_tail(self.tail_files)
                )
            if condition():
                return
            if time.monotonic() >= deadline:
                raise ReadyTimeout(
                    f"{self.name} did not become ready ({what}) within {timeout:.0f} s\n"
                    + read_tail(self.tail_files)
                )
            # Waiting on the child doubles as the pause between polls: an exit ends it early.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(POLL_INTERVAL_S)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after `grace` s, then kill any descendant left.

        Returns the child's exit status (None if it was never started). Safe to call twice.
        """
        proc = self._proc
        if proc is None:
            return None
        try:
            descendants = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            descendants = []
        if proc.poll() is None:
            logger.debug("stopping %s (pid %d)", self.name, proc.pid)
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                logger.warning("%s ignored SIGTERM for %.0f s: killing it", self.name, grace)
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        # The leader is gone; anything still in its group or below it goes too.
        _signal_group(proc.pid, signal.SIGKILL)
        alive = [p for p in descendants if p.is_running()]
        for child in alive:
            with contextlib.suppress(psutil.Error):
                child.kill()
        psutil.wait_procs(alive, timeout=grace)
        if self._output_file is not None:
            self._output_file.close()
            self._output_file = None
        return proc.returncode


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The launcher's environment with `extra` on top, for a child process."""
    env = dict(os.environ)
    env.update(extra or {})
    return env


class ManagedServer:
    """A server run as a child process: `with Server(...) as s:` starts it and waits until it
    is ready (stopping it again if that fails), and stops it on exit."""

    def start(self) -> None:
        raise NotImplementedError

    def wait_ready(self, timeout: float = 60.0) -> object:
        raise NotImplementedError

    def stop(self, grace: float = 20.0) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        """Start and wait until ready; on failure stop what was started and re-raise."""
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
