"""The servers of the peer table: which are peers, how each is started, and all together.

Peers, each serving the bench's mnist28 (`bench.mnist_cnn.MnistCnn`, its weights, the 6 KB
JSON body) with nothing of this project on its serving path:

- FASTAPI: a plain FastAPI endpoint, the model in its process (`fastapi_app`, uvicorn);
- LITSERVE: LitServe with its own batching, 8 requests / 5 ms (`litserve_app`);
- STOCK_TORCHSERVE: TorchServe 0.12 as it ships, batching 8 / 5 ms (`stock_torchserve`).

One reference row, measured in the same rounds but not a peer (never the "best peer" of
`rows.ratios`): PROJECT_ARCHIVE_B8, this project's own archive (its handler) registered once
more in the bench's TorchServe (the project's JVM flags, log4j2.xml and config.properties)
with TorchServe's batching at 8 / 5 ms, called without the gateway.

Each Python peer runs as `python -m bench.peers.<app>` in a session of its own, so that the
processes it forks (LitServe's API server and inference worker, its multiprocessing resource
tracker) are stopped with it: LitServe's main process leaves them running when it gets
SIGTERM alone. Ready means its health route answers 200.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bench.loadgen import Target
from bench.peers.running import (
    PORT_TAKEN,
    READY_TIMEOUT_S,
    START_ATTEMPTS,
    PeerServer,
    answers_200,
    process_tree,
    stop_session,
)
from bench.peers.stock_torchserve import BATCH_DELAY_MS, BATCH_SIZE, running_stock_torchserve
from bench.peers.stock_torchserve import NAME as STOCK_TORCHSERVE
from bench.stack import BenchModel, Stack
from tests.support.ports import free_port

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
ROUTE = "/predictions/mnist28"

# The servers' names in the report.
FASTAPI = "FastAPI, model in-process"
LITSERVE = "LitServe, batch 8 / 5 ms"
PEERS = (FASTAPI, LITSERVE, STOCK_TORCHSERVE)
PROJECT_ARCHIVE_B8 = "this project's archive on TorchServe's batching 8 / 5 ms (no gateway)"
REFERENCES = (PROJECT_ARCHIVE_B8,)

APPS = {
    FASTAPI: ("bench.peers.fastapi_app", "/ping"),
    LITSERVE: ("bench.peers.litserve_app", "/health"),
}


def project_archive_b8_name(model: str) -> str:
    """The name the project's archive is registered under for the reference row."""
    return f"{model}-ts8"


def _start(
    name: str, weights: Path, threads: int, log_path: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """Start `APPS[name]` on a free port and wait until it is ready; (process, port).

    A peer whose port was taken before it bound it exits with "Address already in use" and
    is started again on another port, at most `START_ATTEMPTS` times in all. RuntimeError
    when it never gets ready.
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
        while not answers_200(f"http://127.0.0.1:{port}{health}"):
            if proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        else:
            return proc, port
        stop_session(proc)
        output = log_path.read_text(errors="replace")
        if PORT_TAKEN not in output:
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
        pids = process_tree(proc.pid)
        logger.info("peer %r ready on port %d, pids %s", name, port, pids)
        target = Target(f"http://127.0.0.1:{port}{ROUTE}", model.body, model.content_type)
        yield PeerServer(name, target, pids)
    finally:
        stop_session(proc)


def register_project_archive_b8(stack: Stack, model: BenchModel) -> PeerServer:
    """The reference row: `model`'s archive (this project's handler) registered once more in
    the bench's TorchServe with TorchServe's batching (8, 5 ms), called directly.

    Raises RuntimeError when TorchServe refuses it or serves it with other settings.
    """
    name = project_archive_b8_name(model.name)
    # The stock peer's batching: the two rows differ in handler and TorchServe settings only.
    stack.register_with_batching(model, name, BATCH_SIZE, BATCH_DELAY_MS)
    java = stack.torchserve.pid
    pids = ([java] if java else []) + stack.worker_pids(name)
    target = Target(
        f"{stack.torchserve.inference_url}/predictions/{name}", model.body, model.content_type
    )
    return PeerServer(PROJECT_ARCHIVE_B8, target, pids)


@contextlib.contextmanager
def running_peers(
    stack: Stack, model: BenchModel, weights: Path, threads: int, log_dir: Path
) -> Iterator[list[PeerServer]]:
    """Every peer serving `model`, ready, then the reference row (registered in `stack`);
    the peers' processes stopped on exit, even when one of them fails to start.

    `threads`: the torch threads of every peer's model (the project's worker's count).
    """
    with (
        running_app(FASTAPI, model, weights, threads, log_dir) as fastapi_peer,
        running_app(LITSERVE, model, weights, threads, log_dir) as litserve_peer,
        running_stock_torchserve(model, weights, threads, log_dir) as stock,
    ):
        reference = register_project_archive_b8(stack, model)
        yield [fastapi_peer, litserve_peer, stock.peer, reference]
