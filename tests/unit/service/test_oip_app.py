"""The v2 routes of the whole gateway app over ASGI, in front of a fake TorchServe.

Only what real TorchServe cannot be made to do on demand: hang (504), be unreachable (503),
answer with a Java stack in its message, or let the test count what it was sent. The same
routes against the real TorchServe, through the real clients: tests/integration/service.
"""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from handlers import envelope
from service.app import create_app
from service.settings import GatewaySettings

pytestmark = pytest.mark.anyio

KEY = "k" * 24
AUTH = {"authorization": f"Bearer {KEY}"}
HANDLER = {"task": "tensor", "input": {"shape": [3], "dtype": "float32"}}

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def write_archive(path: Path, handler: dict[str, object]) -> None:
    with zipfile.ZipFile(path, "w") as mar:
        mar.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": {"configFile": "c.yaml"}}))
        mar.writestr("c.yaml", yaml.safe_dump({"batchSize": 2, "handler": handler}))


class FakeTorchServe:
    """Describes model `m` (1.0, archive m.mar, one READY worker); predictions answer the
    sum of the .npy body they get (envelopes item by item), or what `predict` says."""

    def __init__(self) -> None:
        self.predictions: list[httpx.Request] = []
        self.predict: Handler | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path in ("/models/m", "/models/m/1.0", "/models/m/all"):
            return httpx.Response(200, json=[{
                "modelName": "m", "modelVersion": "1.0", "modelUrl": "m.mar", "minWorkers": 1,
                "workers": [{"status": "READY"}],
            }])  # fmt: skip
        if path.startswith("/models/"):
            return httpx.Response(
                404, json={"code": 404, "type": "ModelNotFoundException", "message": "nope"}
            )
        self.predictions.append(request)
        if self.predict is not None:
            return await self.predict(request)
        if request.headers["content-type"] == envelope.CONTENT_TYPE:
            answers = [
                envelope.Answer(200, "application/json", _sum(item.body))
                for item in envelope.unpack_request(request.content)
            ]
            return httpx.Response(
                200,
                headers={"content-type": envelope.CONTENT_TYPE, envelope.ACCEPTS_HEADER: "1"},
                content=envelope.pack_answers(answers),
            )
        return httpx.Response(
            200,
            headers={"content-type": "application/json", envelope.ACCEPTS_HEADER: "1"},
            content=_sum(request.content),
        )


def _sum(body: bytes) -> bytes:
    return json.dumps([float(np.load(io.BytesIO(body)).sum())]).encode()


@asynccontextmanager
async def gateway(
    tmp_path: Path, fake: httpx.AsyncBaseTransport, **overrides: object
) -> AsyncIterator[httpx.AsyncClient]:
    write_archive(tmp_path / "m.mar", HANDLER)
    values: dict[str, object] = {
        "torchserve_inference_port": 18080,
        "torchserve_management_port": 18081,
        "model_store": tmp_path,
        "gateway_inference_keys": (KEY,),
        "gateway_max_body_bytes": 2000,
        "gateway_timeout_s": 1.0,
        **overrides,
    }
    app = create_app(GatewaySettings(**values), upstream_transport=fake)  # type: ignore[arg-type]
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client,
    ):
        yield client


@pytest.fixture
def fake() -> FakeTorchServe:
    return FakeTorchServe()


@pytest.fixture
async def client(tmp_path: Path, fake: FakeTorchServe) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway(tmp_path, httpx.MockTransport(fake)) as c:
        yield c


def infer_body(rows: int) -> dict[str, object]:
    data = [[float(i), 1.0, 2.0] for i in range(rows)]
    return {"id": "x", "inputs": [{"name": "input", "shape": [rows, 3], "datatype": "FP32",
                                   "data": data}]}  # fmt: skip


def assert_v2_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}, body
    assert response.headers["x-request-id"]
    message: str = body["error"]
    return message


async def test_infer_sends_instances_in_one_envelope_and_stacks_answers(
    client: httpx.AsyncClient, fake: FakeTorchServe
) -> None:
    first = await client.post("/v2/models/m/versions/1.0/infer", json=infer_body(1), headers=AUTH)
    assert first.status_code == 200, first.text
    response = await client.post(
        "/v2/models/m/versions/1.0/infer", json=infer_body(5), headers=AUTH
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "m" and body["model_version"] == "1.0" and body["id"] == "x"
    (output,) = body["outputs"]
    assert output["shape"] == [5, 1]
    assert output["data"] == [3.0, 4.0, 5.0, 6.0, 7.0]
    # The first request taught the gateway that the handler reads envelopes: five in one.
    assert len(fake.predictions) == 2
    assert fake.predictions[1].headers["content-type"] == envelope.CONTENT_TYPE
    assert fake.predictions[1].url.path == "/predictions/m/1.0"


async def test_errors_take_the_protocol_shape(client: httpx.AsyncClient) -> None:
    assert "Bearer" in assert_v2_error(await client.get("/v2/models/m"), 401)
    assert assert_v2_error(await client.get("/v2/models/zz", headers=AUTH), 404)
    assert_v2_error(await client.get("/v2/models/bad name!", headers=AUTH), 400)
    assert_v2_error(await client.get("/v2/models/m/versions/a..b", headers=AUTH), 400)
    assert_v2_error(await client.get("/v2/nowhere", headers=AUTH), 404)
    wrong_method = await client.delete("/v2/models/m/infer", headers=AUTH)
    assert_v2_error(wrong_method, 405)
    bad = await client.post("/v2/models/m/infer", content=b"{", headers=AUTH)
    assert "JSON" in assert_v2_error(bad, 400)
    too_big = await client.post("/v2/models/m/infer", content=b"x" * 3000, headers=AUTH)
    assert_v2_error(too_big, 413)
    assert too_big.headers["connection"] == "close"
    # The rest of the gateway keeps its one format.
    assert set((await client.get("/nowhere")).json()) == {"code", "type", "message"}


async def test_an_instance_failing_fails_the_request_sanitised(
    client: httpx.AsyncClient, fake: FakeTorchServe
) -> None:
    async def refuse(request: httpx.Request) -> httpx.Response:
        message = "Prediction failed at org.pytorch.serve.wlm.WorkerThread /tmp/x.py"
        return httpx.Response(503, json={"code": 503, "type": "InternalServerException",
                                         "message": message})  # fmt: skip

    fake.predict = refuse
    response = await client.post("/v2/models/m/infer", json=infer_body(1), headers=AUTH)
    message = assert_v2_error(response, 500)
    assert "org.pytorch" not in message and "/tmp" not in message


async def test_upstream_timeout_and_unreachable(tmp_path: Path) -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/models"):
            return await FakeTorchServe()(request)
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    async with gateway(tmp_path, httpx.MockTransport(hang)) as client:
        response = await client.post("/v2/models/m/infer", json=infer_body(2), headers=AUTH)
        assert_v2_error(response, 504)

    async def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with gateway(tmp_path, httpx.MockTransport(refuse)) as client:
        response = await client.get("/v2/models/m", headers=AUTH)
        assert_v2_error(response, 503)
        assert response.headers["retry-after"] == "1"
        ready = await client.get("/v2/health/ready")
        assert (ready.status_code, ready.json()) == (503, {"ready": False})
        assert (await client.get("/v2/health/live")).json() == {"live": True}
        ping = await client.get("/ping")
        assert (ping.status_code, ping.json()) == (500, {"status": "Unhealthy"})


async def test_the_in_flight_bound_covers_v2_with_its_error_shape(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return await FakeTorchServe()(request)

    async with gateway(tmp_path, httpx.MockTransport(slow), gateway_max_in_flight=1) as client:
        first = asyncio.create_task(client.get("/v2/models/m", headers=AUTH))
        await asyncio.sleep(0.05)  # let it take the one slot
        refused = await client.post("/v2/models/m/infer", json=infer_body(1), headers=AUTH)
        release.set()
        assert (await first).status_code == 200
    assert "too many requests" in assert_v2_error(refused, 503)
    assert refused.headers["retry-after"] == "1"


async def test_metadata_ready_and_metrics_labels(client: httpx.AsyncClient) -> None:
    metadata = (await client.get("/v2/models/m", headers=AUTH)).json()
    assert metadata == {
        "name": "m",
        "versions": ["1.0"],
        "platform": "pytorch_torchserve",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3]}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, -1]}],
    }
    ready = await client.get("/v2/models/m/versions/1.0/ready", headers=AUTH)
    assert (ready.status_code, ready.json()) == (200, {"name": "m", "ready": True})
    await client.post("/v2/models/m/infer", json=infer_body(1), headers=AUTH)
    metrics = (await client.get("/metrics")).text
    assert 'route="/v2/models/{model}/infer",status="200"' in metrics
    assert 'route="/v2/models/{model}/versions/{version}/ready"' in metrics
