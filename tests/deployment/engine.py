"""A private Docker engine: dockerd with its own data root, exec root, pid file and socket.

Nothing is shared with a system dockerd (there is none here): `docker` commands reach this
one through DOCKER_HOST. Its folders live on a tmpfs mounted for it: the root file system
here is mounted with `discard`, where deleting a data root's few GB of layers file by file
takes minutes; unmounting a tmpfs takes none. `stop()` ends dockerd by its PID, then any
process still running from its folders (containerd, shims), unmounts what is left under
them and the tmpfs, and removes the folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.deployment.host import run
from tests.deployment.report import CheckFailed

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
# The images, their build stages and the containers' layers fit in about 4 GB; tmpfs pages
# are only taken as they are written.
TMPFS_SHARE_OF_MEMORY = 0.6


class PrivateEngine:
    """dockerd rooted in `root` (a short path: unix socket paths are limited to 107 bytes)."""

    def __init__(self, root: Path, docker_config: Path, log: Path) -> None:
        self.root = root
        self.socket = root / "docker.sock"
        self.pidfile = root / "dockerd.pid"
        self.log = log  # outside `root`, so it outlives the engine's folders
        self.env = {"DOCKER_HOST": f"unix://{self.socket}", "DOCKER_CONFIG": str(docker_config)}
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        """Start dockerd and wait until it answers; returns its version.

        Raises:
            CheckFailed: dockerd is missing, exited, or did not answer in time (with its log).
        """
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise CheckFailed("dockerd is not installed (Debian package docker.io)")
        self.root.mkdir(parents=True, exist_ok=True)
        run(
            [
                "mount",
                "-t",
                "tmpfs",
                "-o",
                f"size={_tmpfs_bytes()},mode=0711",
                "tgs-docker",
                str(self.root),
            ]
        )
        command = [
            dockerd,
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.pidfile}",
            f"--host=unix://{self.socket}",
        ]
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise CheckFailed(f"dockerd exited {self._process.returncode}:\n{self.log_tail()}")
            answer = subprocess.run(
                ["docker", "version", "--format", "{{.Server.Version}}"],
                env={**os.environ, **self.env},
                capture_output=True,
                text=True,
                check=False,
            )
            if answer.returncode == 0:
                return answer.stdout.strip()
            time.sleep(0.5)
        raise CheckFailed(f"dockerd did not answer in {START_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def docker(self, *args: str, timeout: float = 600) -> str:
        """`docker ARGS` against this engine; its stdout."""
        return run(["docker", *args], env=self.env, timeout=timeout)

    def container_logs(self, container: str, lines: int = 40) -> str:
        """The last `lines` of a container's output, stdout and stderr together."""
        result = subprocess.run(
            ["docker", "logs", "--tail", str(lines), container],
            env={**os.environ, **self.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=60,
            check=False,
        )
        return result.stdout.decode(errors="replace")

    def log_tail(self, size: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-size:] if self.log.exists() else ""

    def stop(self) -> list[str]:
        """Stop dockerd by its PID and remove its folders; returns what had to be forced."""
        forced: list[str] = []
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
                forced.append(f"dockerd {self._process.pid} killed")
        for pid in _processes_under(self.root):
            os.kill(pid, signal.SIGKILL)
            forced.append(f"process {pid} killed")
        for mount in _mounts_under(self.root):
            subprocess.run(["umount", "-l", mount], check=False)
            if mount != str(self.root):  # the tmpfs itself is ours to unmount
                forced.append(f"{mount} unmounted")
        shutil.rmtree(self.root, ignore_errors=True)
        if self.root.exists():
            raise CheckFailed(f"{self.root} could not be removed")
        return forced


def disk_use(path: Path) -> int:
    """Bytes in use on the file system at `path` (the engine's tmpfs)."""
    stats = os.statvfs(path)
    return (stats.f_blocks - stats.f_bfree) * stats.f_frsize


def _tmpfs_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(int(line.split()[1]) * 1024 * TMPFS_SHARE_OF_MEMORY)
    raise CheckFailed("/proc/meminfo has no MemTotal")


def _processes_under(root: Path) -> list[int]:
    """PIDs whose command line names `root` (containerd and shims started for this engine)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(root) in command:
            found.append(int(entry.name))
    return found


def _mounts_under(root: Path) -> list[str]:
    mounts = []
    for line in Path("/proc/mounts").read_text().splitlines():
        target = line.split()[1]
        if target == str(root) or target.startswith(f"{root}/"):
            mounts.append(target)
    return sorted(mounts, key=len, reverse=True)
