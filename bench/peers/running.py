"""What a running peer is, and how a peer's processes are waited for and stopped.

Every peer the phase starts runs in a session of its own (`start_new_session=True`): its
session leader's process group holds what it forks (LitServe's API server and inference
worker, TorchServe's JVM and Python workers), so the whole group can be signalled at once
even after its leader is gone. `stop_session` is the one way they are stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import psutil

from bench.loadgen import Target

READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 15.0
# A port found free can be taken by another program before the peer binds it (the machine
# runs other test suites): a peer that exits with "Address already in use" is started again
# on other ports, at most this many times in all.
START_ATTEMPTS = 3
PORT_TAKEN = "Address already in use"


@dataclass
class PeerServer:
    """One running server of the peer table: where to send the body, and the pids whose CPU
    it spends."""

    name: str
    target: Target
    pids: list[int]


def answers_200(url: str) -> bool:
    """True when a GET of `url` answers 200 (a health route); False on any HTTP error."""
    try:
        return httpx.get(url, timeout=5.0, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def process_tree(pid: int) -> list[int]:
    """`pid` and every descendant it has now (just `pid` when it cannot be read)."""
    try:
        return [pid] + [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return [pid]


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def wait_gone(pids: Sequence[int], timeout: float) -> list[psutil.Process]:
    """Wait up to `timeout` s for every one of `pids` to exit; the processes still alive."""
    _, alive = psutil.wait_procs(
        [p for pid in pids if (p := _process(pid)) is not None], timeout=timeout
    )
    return list(alive)


def stop_session(proc: subprocess.Popen[bytes], members: Sequence[int] | None = None) -> None:
    """Stop the session `proc` leads: SIGTERM to its process group, SIGKILL to what is left.

    `members`: the pids to wait for (default: `proc`'s tree now). Take them before anything
    else signals the session, since a descendant whose parent exits is no longer found by
    walking the tree from `proc`. Each wait lasts at most STOP_TIMEOUT_S; whatever is still
    alive after it (in the group or in `members`) gets SIGKILL. Never raises for a process
    that is already gone.
    """
    members = list(members) if members is not None else process_tree(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    alive = wait_gone(members, STOP_TIMEOUT_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for leftover in alive:
        with contextlib.suppress(psutil.Error):
            leftover.kill()
