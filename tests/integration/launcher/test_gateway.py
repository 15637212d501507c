"""The gateway started by the launcher (through tests.support): in front of a real TorchServe."""

from pathlib import Path

import httpx
import psutil
import pytest

from launcher.gateway import HTTP_PROTOCOL
from tests.support.ports import listening_addresses
from tests.support.servers import running_gateway, running_torchserve

pytestmark = pytest.mark.integration


def test_gateway_proxies_to_torchserve_and_stops(echo_store: Path, tmp_path: Path) -> None:
    with (
        running_torchserve(echo_store, tmp_path / "run") as ts,
        running_gateway(ts) as gateway,
        httpx.Client(trust_env=False, timeout=30) as client,
    ):
        assert gateway.pid is not None
        uvicorn = psutil.Process(gateway.pid)
        command = " ".join(uvicorn.cmdline())
        listening = listening_addresses(uvicorn)
        answer = client.post(
            f"{gateway.url}/predictions/echo",
            content=b"1234",
            headers={"Content-Type": "application/octet-stream"},
        )

    assert answer.status_code == 200, answer.text
    assert answer.json() == {"echo_bytes": 4}
    assert listening == {("127.0.0.1", gateway.settings.gateway_port)}
    for option in [
        "--loop uvloop",
        f"--http {HTTP_PROTOCOL}",
        "--no-access-log",
        "--factory",
        "--no-proxy-headers",
        "--no-server-header",
    ]:
        assert option in command
    assert "server" not in answer.headers  # --no-server-header, as a client sees it
    assert not uvicorn.is_running()


def test_gateway_env_reaches_the_app(tmp_path: Path) -> None:
    key = "k" * 32
    with (
        running_gateway(run_dir=tmp_path, env={"GATEWAY_INFERENCE_KEYS": key}) as gateway,
        httpx.Client(trust_env=False, timeout=30) as client,
    ):
        without_key = client.post(f"{gateway.url}/predictions/echo", content=b"x")
        with_key = client.post(
            f"{gateway.url}/predictions/echo",
            content=b"x",
            headers={"Authorization": f"Bearer {key}"},
        )

    assert without_key.status_code == 401
    # The key was accepted: the request went on to the (absent) TorchServe, refused at once.
    assert with_key.status_code == 503, with_key.text
    assert with_key.json()["type"] == "UpstreamUnavailable"
