"""LauncherSettings: the shared environment names and their defaults."""

from pathlib import Path

import pydantic
import pytest

from launcher.settings import LauncherSettings

NAMES = [
    "GATEWAY_HOST",
    "GATEWAY_PORT",
    "TORCHSERVE_BIND_HOST",
    "TORCHSERVE_INFERENCE_PORT",
    "TORCHSERVE_MANAGEMENT_PORT",
    "TORCHSERVE_METRICS_PORT",
    "TORCHSERVE_GRPC_INFERENCE_PORT",
    "TORCHSERVE_GRPC_MANAGEMENT_PORT",
    "TORCHSERVE_WORKER_PORT",
    "TORCHSERVE_WORKERS_PER_MODEL",
    "MODEL_STORE",
    "RUN_DIR",
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    s = LauncherSettings()

    assert (s.gateway_host, s.gateway_port) == ("127.0.0.1", 8000)
    assert s.torchserve_bind_host == "127.0.0.1"
    assert s.torchserve_inference_port == 8080
    assert s.torchserve_management_port == 8081
    assert s.torchserve_metrics_port == 8082
    assert s.torchserve_grpc_inference_port == 7070
    assert s.torchserve_grpc_management_port == 7071
    assert s.torchserve_worker_port == 9000
    assert s.torchserve_workers_per_model == 1
    assert s.model_store == Path("model_store")
    assert s.run_dir == Path("run")


def test_every_name_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {name: str(20000 + i) for i, name in enumerate(NAMES)}
    values.update(
        GATEWAY_HOST="0.0.0.0",
        TORCHSERVE_BIND_HOST="0.0.0.0",
        TORCHSERVE_WORKERS_PER_MODEL="2",
        MODEL_STORE="/srv/store",
        RUN_DIR="/srv/run",
    )
    for name, value in values.items():
        monkeypatch.setenv(name, value)

    s = LauncherSettings()

    for name, value in values.items():
        assert str(getattr(s, name.lower())) == value


@pytest.mark.parametrize("port", ["0", "65536", "http"])
def test_invalid_port_is_refused(monkeypatch: pytest.MonkeyPatch, port: str) -> None:
    monkeypatch.setenv("TORCHSERVE_INFERENCE_PORT", port)

    with pytest.raises(pydantic.ValidationError):
        LauncherSettings()
