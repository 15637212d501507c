"""A query parameter the gateway acts on, given twice, is a 400 naming it, and TorchServe
is never asked (over ASGI, in front of a fake TorchServe that records what it is asked)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.unit.service.test_app import MGMT, FakeTorchServe, gateway, settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake() -> FakeTorchServe:
    return FakeTorchServe()


@pytest.fixture
async def client(tmp_path: Path, fake: FakeTorchServe) -> AsyncIterator[httpx.AsyncClient]:
    (tmp_path / "echo.mar").write_bytes(b"PK")
    (tmp_path / "other.mar").write_bytes(b"PK")
    async with gateway(settings(tmp_path), httpx.MockTransport(fake)) as c:
        yield c


@pytest.mark.parametrize(
    ("method", "path", "repeated"),
    [
        ("POST", "/models?url=other.mar&url=echo.mar", "url"),
        ("POST", "/models?url=../canary.mar&url=echo.mar", "url"),
        ("POST", "/models?url=echo.mar&initial_workers=1&initial_workers=2", "initial_workers"),
        ("POST", "/models?url=echo.mar&batch_size=1&batch_size=8", "batch_size"),
        ("POST", "/models?url=echo.mar&max_batch_delay=0&max_batch_delay=9", "max_batch_delay"),
        ("POST", "/models?url=echo.mar&synchronous=true&synchronous=false", "synchronous"),
        ("GET", "/models?limit=1&limit=2", "limit"),
        ("PUT", "/models/echo?min_worker=1&min_worker=3", "min_worker"),
        ("PUT", "/models/echo/1.0?max_worker=1&max_worker=3", "max_worker"),
    ],
)
async def test_a_repeated_parameter_is_400_naming_it(
    client: httpx.AsyncClient, fake: FakeTorchServe, method: str, path: str, repeated: str
) -> None:
    response = await client.request(method, path, headers=MGMT)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["type"] == "InvalidRequest"
    assert f"Repeated query parameter(s): {repeated};" in body["message"]
    assert fake.requests == []


async def test_every_repeated_name_is_named_once(
    client: httpx.AsyncClient, fake: FakeTorchServe
) -> None:
    response = await client.post(
        "/models?batch_size=2&url=echo.mar&url=echo.mar&batch_size=2&batch_size=2", headers=MGMT
    )
    assert response.status_code == 400
    assert "Repeated query parameter(s): batch_size, url;" in response.json()["message"]
    assert fake.requests == []


async def test_without_a_key_the_repetition_is_not_discussed(client: httpx.AsyncClient) -> None:
    response = await client.post("/models?url=echo.mar&url=echo.mar")
    assert response.status_code == 401


async def test_each_parameter_once_still_registers(
    client: httpx.AsyncClient, fake: FakeTorchServe
) -> None:
    response = await client.post("/models?url=echo.mar&initial_workers=1", headers=MGMT)
    assert response.status_code == 200
    assert len(fake.requests) == 1
