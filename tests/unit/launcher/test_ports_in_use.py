"""A taken port is reported before anything starts, never as a hang or a Java stack trace."""

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.errors import LauncherError, PortInUseError
from launcher.gateway import Gateway
from launcher.settings import LauncherSettings
from launcher.torchserve import TorchServe, check_port_free
from tests.support.ports import free_port, free_ports


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def settings_for(tmp_path: Path, **ports: int) -> LauncherSettings:
    free = free_ports(6)
    values: dict[str, object] = {
        "torchserve_inference_port": free[0],
        "torchserve_management_port": free[1],
        "torchserve_metrics_port": free[2],
        "torchserve_grpc_inference_port": free[3],
        "torchserve_grpc_management_port": free[4],
        "gateway_port": free[5],
        "model_store": tmp_path,
        "run_dir": tmp_path / "run",
    }
    values.update(ports)
    return LauncherSettings(**values)  # type: ignore[arg-type]


def test_check_port_free_accepts_a_free_port() -> None:
    check_port_free("X", "127.0.0.1", free_port())


def test_check_port_free_names_the_taken_port(taken_port: int) -> None:
    with pytest.raises(PortInUseError, match=f"X port {taken_port} on 127.0.0.1") as info:
        check_port_free("X", "127.0.0.1", taken_port)

    assert (info.value.name, info.value.port) == ("X", taken_port)


@pytest.mark.parametrize(
    "field",
    [
        "torchserve_inference_port",
        "torchserve_management_port",
        "torchserve_metrics_port",
        "torchserve_grpc_inference_port",
        "torchserve_grpc_management_port",
    ],
)
def test_torchserve_refuses_to_start_on_a_taken_port(
    tmp_path: Path, taken_port: int, field: str
) -> None:
    torchserve = TorchServe(settings_for(tmp_path, **{field: taken_port}))

    with pytest.raises(PortInUseError, match=field.upper()):
        torchserve.start()

    assert torchserve.pid is None
    assert not torchserve.config_path.exists()


def test_torchserve_refuses_two_services_on_one_port(tmp_path: Path) -> None:
    port = free_port()
    settings = settings_for(tmp_path, torchserve_inference_port=port, torchserve_metrics_port=port)

    with pytest.raises(LauncherError, match="must all differ"):
        TorchServe(settings).start()


def test_torchserve_needs_an_existing_model_store(tmp_path: Path) -> None:
    settings = settings_for(tmp_path).model_copy(update={"model_store": tmp_path / "missing"})

    with pytest.raises(LauncherError, match=r"model store .* does not exist"):
        TorchServe(settings).start()


def test_gateway_refuses_to_start_on_a_taken_port(tmp_path: Path, taken_port: int) -> None:
    gateway = Gateway(settings_for(tmp_path, gateway_port=taken_port))

    with pytest.raises(PortInUseError, match="GATEWAY_PORT"):
        gateway.start()

    assert gateway.pid is None
