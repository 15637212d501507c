"""Start the real servers for tests: TorchServe and the gateway, on free loopback ports.

Both are the launcher's own classes (`launcher.torchserve.TorchServe`, `launcher.gateway.Gateway`),
so tests exercise the code that `make serve` runs. Typical session fixtures:

    @pytest.fixture(scope="session")
    def torchserve(tmp_path_factory):
        store = tmp_path_factory.mktemp("store")
        build_echo_archive(store)
        with running_torchserve(store, tmp_path_factory.mktemp("run")) as ts:
            yield ts

    @pytest.fixture(scope="session")
    def gateway(torchserve):
        with running_gateway(torchserve, env={"GATEWAY_API_KEYS": "test-key"}) as gw:
            yield gw   # gw.url == "http://127.0.0.1:<port>"

Each context manager stops its server (and every child process) when it exits.
"""

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from launcher.gateway import Gateway, gateway_env_for
from launcher.settings import LauncherSettings
from launcher.torchserve import TorchServe
from tests.support.ports import free_port, free_ports

TORCHSERVE_READY_TIMEOUT_S = 180.0
GATEWAY_READY_TIMEOUT_S = 60.0


def torchserve_settings(model_store: Path, run_dir: Path, **overrides: object) -> LauncherSettings:
    """Launcher settings with every TorchServe port (REST, gRPC, workers) on a free port."""
    ports = free_ports(7)
    values: dict[str, object] = {
        "torchserve_bind_host": "127.0.0.1",
        "torchserve_inference_port": ports[0],
        "torchserve_management_port": ports[1],
        "torchserve_metrics_port": ports[2],
        "torchserve_grpc_inference_port": ports[3],
        "torchserve_grpc_management_port": ports[4],
        "torchserve_worker_port": ports[5],
        "gateway_host": "127.0.0.1",
        "gateway_port": ports[6],
        "model_store": model_store,
        "run_dir": run_dir,
    }
    values.update(overrides)
    return LauncherSettings(**values)  # type: ignore[arg-type]


@contextlib.contextmanager
def running_torchserve(
    model_store: Path,
    run_dir: Path,
    models: Sequence[str] | None = None,
    *,
    max_body_bytes: int | None = None,
    timeout: float = TORCHSERVE_READY_TIMEOUT_S,
    settings: Mapping[str, object] | None = None,
    extra_properties: Mapping[str, str] | None = None,
) -> Iterator[TorchServe]:
    """A real TorchServe serving `models` (archive file names; None: all) from `model_store`.

    Its config, logs and temp dir go under `run_dir` (use a pytest tmp dir). Yields once
    /ping is healthy and every model's workers are READY; stops everything on exit.
    `settings` overrides LauncherSettings fields (e.g. `{"torchserve_workers_per_model": 2}`);
    `max_body_bytes` stands for the gateway's GATEWAY_MAX_BODY_BYTES. `extra_properties`:
    TorchServe keys the launcher does not render, appended to its config.properties (for
    faults that only a setting makes happen on demand).

    Raises:
        launcher.errors.ProcessExited, launcher.errors.ReadyTimeout: it did not come up
            (the message holds the tail of TorchServe's logs).
    """
    launcher_settings = torchserve_settings(model_store, run_dir, **(settings or {}))
    torchserve = TorchServe(launcher_settings, models=models, max_body_bytes=max_body_bytes)
    if extra_properties:
        lines = "".join(f"{key}={value}\n" for key, value in extra_properties.items())
        torchserve._config_text += "\n" + lines  # the text start() writes
    torchserve.start()
    try:
        torchserve.wait_ready(timeout)
        yield torchserve
    finally:
        torchserve.stop()


@contextlib.contextmanager
def running_gateway(
    torchserve: TorchServe | None = None,
    *,
    env: Mapping[str, str] | None = None,
    run_dir: Path | None = None,
    timeout: float = GATEWAY_READY_TIMEOUT_S,
) -> Iterator[Gateway]:
    """A real gateway (uvicorn subprocess) on a free port, pointed at `torchserve`.

    Args:
        torchserve: the backend; None points the gateway at a closed port (for tests of
            how the gateway reports an unreachable TorchServe).
        env: extra environment for the gateway (keys, limits, timeouts...); applied last.
        run_dir: where its console output goes (default: the TorchServe's run dir).

    Yields once GET /healthz answers 200; stops it on exit.
    """
    if torchserve is not None:
        settings = torchserve.settings.model_copy(update={"gateway_port": free_port()})
    else:
        if run_dir is None:
            raise ValueError("running_gateway needs a run_dir when there is no torchserve")
        closed = free_ports(2)
        settings = LauncherSettings(
            gateway_host="127.0.0.1",
            gateway_port=free_port(),
            torchserve_inference_port=closed[0],
            torchserve_management_port=closed[1],
            run_dir=run_dir,
        )
    if run_dir is not None:
        settings = settings.model_copy(update={"run_dir": run_dir})
    gateway = Gateway(settings, env={**gateway_env_for(settings), **(env or {})})
    gateway.start()
    try:
        gateway.wait_ready(timeout)
        yield gateway
    finally:
        gateway.stop()
