"""Which process is which, how much CPU each spent in a window, and how large each grew.

Roles: `gateway` (uvicorn), `frontend` (TorchServe's JVM), `worker` (the Python workers of
the model under load; TorchServe's describe-model API names their pids). CPU time comes from
`psutil.Process.cpu_times()` (user + system) read just before and just after a window; RSS
from a thread that samples every process every `interval_s`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import psutil

Roles = Mapping[str, Iterable[int]]


def cpu_seconds(pids: Iterable[int]) -> dict[int, float]:
    """User + system CPU seconds of each live pid (a pid that is gone is left out)."""
    seconds: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            seconds[pid] = times.user + times.system
    return seconds


@dataclass
class CpuWindow:
    """CPU seconds spent by each role between `start()` and `stop()`.

    Args:
        roles: a function returning, at each call, the pids of each role (workers come and go).
    """

    roles: Callable[[], Roles]
    _before: dict[str, dict[int, float]] = field(default_factory=dict)

    def start(self) -> None:
        self._before = {role: cpu_seconds(pids) for role, pids in self.roles().items()}

    def stop(self) -> dict[str, float]:
        """Seconds per role; a pid born during the window counts from zero."""
        spent: dict[str, float] = {}
        for role, pids in self.roles().items():
            before = self._before.get(role, {})
            after = cpu_seconds(pids)
            spent[role] = sum(t - before.get(pid, 0.0) for pid, t in after.items())
        return spent


def rss_bytes(pid: int) -> int:
    """The resident set size of `pid`, 0 when it is gone."""
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0


class RssSampler:
    """A daemon thread recording the largest RSS seen per pid, while it runs.

    Args:
        pids: called at each sample for the pids to look at (new ones are picked up).
        interval_s: time between samples.
    """

    def __init__(self, pids: Callable[[], Iterable[int]], interval_s: float = 0.05) -> None:
        self._pids = pids
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._peaks: dict[int, int] = {}
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self._interval_s)

    def sample(self) -> None:
        """Take one sample now."""
        pids: list[int] = []
        with contextlib.suppress(psutil.Error):
            pids = list(self._pids())
        for pid in pids:
            rss = rss_bytes(pid)
            with self._lock:
                self._peaks[pid] = max(self._peaks.get(pid, 0), rss)

    def peaks(self) -> dict[int, int]:
        """The largest RSS seen per pid so far, in bytes."""
        with self._lock:
            return dict(self._peaks)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def python_children(pid: int) -> list[int]:
    """The pids of `pid`'s descendants that run Python (TorchServe's workers under the JVM)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    found = []
    for child in children:
        with contextlib.suppress(psutil.Error):
            if "python" in child.name().lower() or "model_service_worker" in " ".join(
                child.cmdline()
            ):
                found.append(child.pid)
    return found
