"""Start and stop the peers on free loopback ports; register TorchServe's batched peer.

Each Python peer runs as `python -m bench.peers.<app>` in a session of its own, so that the
processes it forks (LitServe's API server and inference worker, its multiprocessing resource
tracker) are stopped with it: LitServe's main process leaves them running when it gets
SIGTERM alone. Ready means its health route answers 200.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from bench.loadgen import Target
from bench.stack import BenchModel, Stack
from tests.support.ports import free_port

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 15.0
START_ATTEMPTS = 3
ROUTE = "/predictions/mnist28"

# The peers' names in the report.
FASTAPI = "FastAPI, model in-process"
LITSERVE = "LitServe, batch 8 / 5 ms"
TORCHSERVE_B8 = "TorchServe batching, 8 / 5 ms"
# TorchServe's own batching as its MNIST example's documentation sets it up.
TORCHSERVE_BATCH_SIZE = 8
TORCHSERVE_BATCH_DELAY_MS = 5

APPS = {
    FASTAPI: ("bench.peers.fastapi_app", "/ping"),
    LITSERVE: ("bench.peers.litserve_app", "/health"),
}


def torchserve_b8_name(model: str) -> str:
    """The name the archive is registered under for the TorchServe-batching peer."""
    return f"{model}-ts8"


@dataclass
class PeerServer:
    """One running peer: where to send the body, and the pids whose CPU it spends."""

    name: str
    target: Target
    pids: list[int]


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5.0, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def _tree(pid: int) -> list[int]:
    try:
        return [pid] + [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return [pid]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the peer's whole session, SIGKILL to what is left after STOP_TIMEOUT_S."""
    members = _tree(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    _, alive = psutil.wait_procs(
        [p for pid in members if (p := _process(pid)) is not None], timeout=STOP_TIMEOUT_S
    )
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for leftover in alive:
        with contextlib.suppress(psutil.Error):
            leftover.kill()


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def _start(
    name: str, weights: Path, threads: int, log_path: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """Start `APPS[name]` on a free port and wait until it is ready; (process, port).

    A port found free can be taken by another program before the peer binds it (the machine
    runs other test suites): then the peer exits with "Address already in use" and is started
    again on another port, at most `START_ATTEMPTS` times. RuntimeError when it never gets
    ready.
    """
    module, health = APPS[name]
    for _ in range(START_ATTEMPTS):
        port = free_port()
        command = [sys.executable, "-m", module, "--port", str(port), "--weights", str(weights)]
        command += ["--threads", str(threads)]
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _ready(f"http://127.0.0.1:{port}{health}"):
            if proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        else:
            return proc, port
        _stop(proc)
        output = log_path.read_text(errors="replace")
        if "Address already in use" not in output:
            raise RuntimeError(f"peer {name!r} never became ready:\n{output[-3000:]}")
        logger.info("peer %r: port %d was taken, starting it on another", name, port)
    raise RuntimeError(f"peer {name!r}: no free port in {START_ATTEMPTS} attempts")


@contextlib.contextmanager
def running_app(
    name: str, model: BenchModel, weights: Path, threads: int, log_dir: Path
) -> Iterator[PeerServer]:
    """One Python peer (`APPS[name]`) serving `weights`, ready; stopped with its children."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{APPS[name][0].rsplit('.', 1)[-1]}.log"
    proc, port = _start(name, weights, threads, log_path)
    try:
        logger.info("peer %r ready on port %d", name, port)
        target = Target(f"http://127.0.0.1:{port}{ROUTE}", model.body, model.content_type)
        yield PeerServer(name, target, _tree(proc.pid))
    finally:
        _stop(proc)


def register_torchserve_b8(stack: Stack, model: BenchModel) -> PeerServer:
    """Register `model`'s archive once more with TorchServe's batching (8, 5 ms); the peer.

    Raises RuntimeError when TorchServe refuses it or serves it with other settings.
    """
    name = torchserve_b8_name(model.name)
    stack.register_with_batching(model, name, TORCHSERVE_BATCH_SIZE, TORCHSERVE_BATCH_DELAY_MS)
    java = stack.torchserve.pid
    pids = ([java] if java else []) + stack.worker_pids(name)
    target = Target(
        f"{stack.torchserve.inference_url}/predictions/{name}", model.body, model.content_type
    )
    return PeerServer(TORCHSERVE_B8, target, pids)


@contextlib.contextmanager
def running_peers(
    stack: Stack, model: BenchModel, weights: Path, threads: int, log_dir: Path
) -> Iterator[list[PeerServer]]:
    """Every peer serving `model` (TorchServe's registered in `stack`), ready; stopped on exit."""
    with (
        running_app(FASTAPI, model, weights, threads, log_dir) as fastapi_peer,
        running_app(LITSERVE, model, weights, threads, log_dir) as litserve_peer,
    ):
        yield [fastapi_peer, litserve_peer, register_torchserve_b8(stack, model)]
