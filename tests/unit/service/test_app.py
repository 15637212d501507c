"""The whole gateway app over ASGI, in front of a fake TorchServe (httpx.MockTransport).

The fake stands in only where real TorchServe cannot be made to behave on demand: a
backend that hangs, that answers a given error, or that records whether it was asked.
The same behaviours against the real TorchServe are in tests/integration/service/.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.settings import GatewaySettings
from tests.support.ports import free_port

INF_KEY, MGMT_KEY = "i" * 24, "m" * 24
INF = {"authorization": f"Bearer {INF_KEY}"}
MGMT = {"authorization": f"Bearer {MGMT_KEY}"}

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeTorchServe:
    """Records every request; answers with `handler` (default: echo the body as JSON)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.handler: Handler = self.echo

    async def echo(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            headers={
                "content-type": "application/x-echo",
                "x-request-id": "ts-id",
                "connection": "keep-alive",
            },
            content=b"echo:" + request.content,
        )

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.handler(request)


def settings(tmp_path: Path, **overrides: object) -> GatewaySettings:
    values: dict[str, object] = {
        "torchserve_inference_port": 18080,
        "torchserve_management_port": 18081,
        "model_store": tmp_path,
        "gateway_inference_keys": (INF_KEY,),
        "gateway_management_keys": (MGMT_KEY,),
        "gateway_max_body_bytes": 1000,
        "gateway_timeout_s": 5.0,
    }
    values.update(overrides)
    return GatewaySettings(**values)  # type: ignore[arg-type]


@asynccontextmanager
async def gateway(
    s: GatewaySettings, upstream: httpx.AsyncBaseTransport | None
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(s, upstream_transport=upstream)
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
    (tmp_path / "echo.mar").write_bytes(b"PK")
    async with gateway(settings(tmp_path), httpx.MockTransport(fake)) as c:
        yield c


def assert_error(response: httpx.Response, status: int, type_: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"code", "type", "message"}
    assert body["code"] == status and body["type"] == type_
    return body  # type: ignore[no-any-return]


# --- proxying -----------------------------------------------------------------------------


async def test_prediction_passes_bytes_both_ways(
    client: httpx.AsyncClient, fake: FakeTorchServe
) -> None:
    payload = b'{"data": [1, 2]}'
    response = await client.post(
        "/predictions/m/1.0?topk=2",
        content=payload,
        headers={
            **INF,
            "content-type": "application/json",
            "x-request-id": "abc-1",
            "te": "trailers",
        },
    )
    assert response.status_code == 200
    assert response.content == b"echo:" + payload
    assert response.headers["content-type"] == "application/x-echo"
    assert response.headers["x-request-id"] == "abc-1"
    assert "connection" not in response.headers
    (sent,) = fake.requests
    assert str(sent.url) == "http://127.0.0.1:18080/predictions/m/1.0?topk=2"
    assert sent.content == payload
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["x-request-id"] == "abc-1"
    assert "authorization" not in sent.headers and "te" not in sent.headers


async def test_a_request_id_is_made_when_missing(
    client: httpx.AsyncClient, fake: FakeTorchServe
) -> None:
    response = await client.post("/predictions/m", content=b"x", headers=INF)
    rid = response.headers["x-request-id"]
    assert len(rid) == 32 and fake.requests[0].headers["x-request-id"] == rid


async def test_torchserve_errors_are_mapped(
    client: httpx.AsyncClient, fake: FakeTorchServe
) -> None:
    async def crashed(request: httpx.Request) -> httpx.Response:
        body = {"code": 503, "type": "InternalServerException", "message": "Prediction failed"}
        return httpx.Response(503, json=body)

    fake.handler = crashed
    response = await client.post("/predictions/m", content=b"x", headers=INF)
    assert_error(response, 500, "ModelError")
    assert "InternalServerException" not in response.text


async def test_a_handlers_own_400_passes_through(
    client: httpx.AsyncClient, fake: FakeTorchServe
) -> None:
    async def refused(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, headers={"content-type": "text/plain"}, content=b"need an image")

    fake.handler = refused
    response = await client.post("/predictions/m", content=b"x", headers=INF)
    assert (response.status_code, response.content) == (400, b"need an image")


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [("POST", "/predictions/m", INF), ("GET", "/models", MGMT)],
    ids=["prediction fast path", "FastAPI route"],
)
async def test_a_bug_is_a_500_in_the_one_format_logged_with_its_request_id(
    client: httpx.AsyncClient,
    fake: FakeTorchServe,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    headers: dict[str, str],
) -> None:
    async def bug(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("secret-detail-41")

    fake.handler = bug
    response = await client.request(
        method, path, content=b"x", headers={**headers, "x-request-id": "bug-1"}
    )
    body = assert_error(response, 500, "GatewayError")
    assert "secret-detail-41" not in response.text and body["message"]
    assert response.headers["x-request-id"] == "bug-1"
    (record,) = [r for r in caplog.records if r.exc_info and "bug-1" in r.getMessage()]
    assert "secret-detail-41" in str(record.exc_info[1])  # type: ignore[index]


# --- limits -------------------------------------------------------------------------------


async def test_content_length_over_the_limit_is_413_before_reading(
    client: httpx.AsyncClient, fake: FakeTorchServe
) -> None:
    response = await client.post("/predictions/m", content=b"x" * 1001, headers=INF)
    assert_error(response, 413, "PayloadTooLarge")
    assert response.headers["connection"] == "close"
    assert fake.requests == []
    ok = await client.post("/predictions/m", content=b"x" * 1000, headers=INF)
    assert ok.status_code == 200


async def test_a_chunked_body_over_the_limit_is_413(
    client: httpx.AsyncClient, fake: FakeTorchServe
) -> None:
    chunks_sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        for _ in range(100):
            chunks_sent += 1
            yield b"x" * 300

    response = await client.post("/predictions/m", content=body(), headers=INF)
    assert_error(response, 413, "PayloadTooLarge")
    assert fake.requests == [] and chunks_sent < 10


async def test_a_hanging_torchserve_gives_504_on_time(tmp_path: Path) -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(60)
        raise AssertionError("unreachable")

    async with gateway(settings(tmp_path, gateway_timeout_s=0.3), httpx.MockTransport(hang)) as c:
        start = time.monotonic()
        response = await c.post("/predictions/m", content=b"x", headers=INF)
        elapsed = time.monotonic() - start
    assert_error(response, 504, "UpstreamTimeout")
    assert 0.3 <= elapsed < 1.5


async def test_an_unreachable_torchserve_gives_503_at_once(tmp_path: Path) -> None:
    closed = free_port()
    s = settings(tmp_path, torchserve_inference_port=closed, torchserve_management_port=closed)
    async with gateway(s, None) as c:  # the real transport, to a closed port
        start = time.monotonic()
        response = await c.post("/predictions/m", content=b"x", headers=INF)
        elapsed = time.monotonic() - start
        ready = await c.get("/readyz")
    assert_error(response, 503, "UpstreamUnavailable")
    assert response.headers["retry-after"] == "1"
    assert elapsed < 1.5
    assert ready.status_code == 503 and ready.json()["ready"] is False


async def test_requests_beyond_the_in_flight_bound_get_503(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def wait(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(200, content=b"done")

    async with gateway(settings(tmp_path, gateway_max_in_flight=1), httpx.MockTransport(wait)) as c:
        first = asyncio.create_task(c.post("/predictions/m", content=b"x", headers=INF))
        for _ in range(100):
            if (await c.get("/metrics")).text.find("gateway_requests_in_flight 1.0") >= 0:
                break
            await asyncio.sleep(0.01)
        second = await c.post("/predictions/m", content=b"x", headers=INF)
        health = await c.get("/healthz")
        release.set()
        assert (await first).status_code == 200
    assert_error(second, 503, "Overloaded")
    assert second.headers["retry-after"] == "1"
    assert health.status_code == 200  # health checks are not bounded


# --- keys ---------------------------------------------------------------------------------


async def test_inference_key_rules(client: httpx.AsyncClient, fake: FakeTorchServe) -> None:
    for headers in (
        {},
        {"authorization": "Bearer " + "x" * 24},
        {"authorization": f"Basic {INF_KEY}"},
    ):
        response = await client.post("/predictions/m", content=b"x", headers=headers)
        assert_error(response, 401, "Unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
    assert fake.requests == []
    assert (await client.post("/predictions/m", content=b"x", headers=MGMT)).status_code == 200


async def test_management_key_rules(client: httpx.AsyncClient, fake: FakeTorchServe) -> None:
    assert_error(await client.get("/models"), 401, "Unauthorized")
    assert_error(
        await client.get("/models", headers={"authorization": "Bearer " + "w" * 24}),
        401,
        "Unauthorized",
    )
    assert_error(await client.get("/models", headers=INF), 403, "Forbidden")
    assert fake.requests == []
    assert (await client.get("/models", headers=MGMT)).status_code == 200


async def test_management_is_off_without_management_keys(
    tmp_path: Path, fake: FakeTorchServe
) -> None:
    s = settings(tmp_path, gateway_management_keys=())
    async with gateway(s, httpx.MockTransport(fake)) as c:
        body = assert_error(await c.get("/models", headers=MGMT), 403, "ManagementDisabled")
        open_inference = settings(tmp_path, gateway_inference_keys=())
    assert "GATEWAY_MANAGEMENT_KEYS" in str(body["message"])
    async with gateway(open_inference, httpx.MockTransport(fake)) as c:
        assert (await c.post("/predictions/m", content=b"x")).status_code == 200


async def test_health_metrics_and_docs_need_no_key(client: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/metrics", "/docs", "/openapi.json", "/docs/assets/swagger-ui.css"):
        assert (await client.get(path)).status_code == 200, path


# --- names, SSRF, parameters --------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "file:///etc/passwd",
        "../echo.mar",
        "%2e%2e/echo.mar",
        "..%2Fecho.mar",
        "%252e%252e%252fecho.mar",
        "sub%2Fecho.mar",
        "..%5Cecho.mar",
        "echo.mar%00",
        "%EF%BD%85cho.mar",
        "missing.mar",
    ],
)
async def test_register_accepts_only_archives_in_the_store(
    client: httpx.AsyncClient, fake: FakeTorchServe, url: str
) -> None:
    response = await client.post(f"/models?url={url}&initial_workers=1", headers=MGMT)
    assert_error(response, 400, "InvalidRequest")
    assert fake.requests == []


async def test_register_forwards_only_validated_parameters(
    client: httpx.AsyncClient, fake: FakeTorchServe
) -> None:
    response = await client.post(
        "/models",
        params={
            "url": "echo.mar",
            "initial_workers": 1,
            "synchronous": "true",
            "batch_size": 4,
            "max_batch_delay": 50,
        },
        headers=MGMT,
    )
    assert response.status_code == 200
    (sent,) = fake.requests
    assert sent.method == "POST" and sent.url.path == "/models" and sent.url.port == 18081
    assert dict(sent.url.params) == {
        "url": "echo.mar",
        "initial_workers": "1",
        "synchronous": "true",
        "batch_size": "4",
        "max_batch_delay": "50",
    }


@pytest.mark.parametrize(
    "query",
    [
        "url=echo.mar&initial_workers=-1",
        "url=echo.mar&initial_workers=x",
        "url=echo.mar&handler=evil",
        "",
    ],
)
async def test_bad_parameters_are_400(
    client: httpx.AsyncClient, fake: FakeTorchServe, query: str
) -> None:
    assert_error(await client.post(f"/models?{query}", headers=MGMT), 400, "InvalidRequest")
    assert fake.requests == []


# An encoded slash decodes to another path segment, so no route matches (404); a name or
# version that reaches a route but breaks its pattern is a 400. Either way, not TorchServe.
@pytest.mark.parametrize(
    ("method", "path", "status", "type_"),
    [
        ("POST", "/predictions/..%2F..%2Fmodels", 404, "RouteNotFound"),
        ("POST", "/predictions/-x", 400, "InvalidRequest"),
        ("POST", "/predictions/m/..%2F1", 404, "RouteNotFound"),
        ("POST", "/predictions/m/1..2", 400, "InvalidRequest"),
        ("GET", "/models/a%00b", 400, "InvalidRequest"),
        ("PUT", "/models/m/..%2e/set-default", 400, "InvalidRequest"),
        ("DELETE", "/models/m/%2e%2e", 400, "InvalidRequest"),
    ],
)
async def test_bad_names_are_refused_before_torchserve(
    client: httpx.AsyncClient,
    fake: FakeTorchServe,
    method: str,
    path: str,
    status: int,
    type_: str,
) -> None:
    assert_error(await client.request(method, path, headers=MGMT), status, type_)
    assert fake.requests == []


async def test_unknown_routes_and_methods_use_the_error_format(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/nope"), 404, "RouteNotFound")
    assert_error(await client.get("/predictions/m", headers=INF), 405, "MethodNotAllowed")


# --- readiness and metrics ----------------------------------------------------------------


def management_api(workers: dict[str, list[str]]) -> Handler:
    async def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/models":
            return httpx.Response(
                200, json={"models": [{"modelName": n, "modelUrl": f"{n}.mar"} for n in workers]}
            )
        name = request.url.path.split("/")[2]
        described = [
            {
                "modelName": name,
                "modelVersion": "1.0",
                "minWorkers": 1,
                "workers": [{"status": s} for s in workers[name]],
            }
        ]
        return httpx.Response(200, json=described)

    return answer


async def test_readyz_needs_every_model_ready(
    client: httpx.AsyncClient, fake: FakeTorchServe
) -> None:
    fake.handler = management_api({"a": ["READY"], "b": ["UNLOADING"]})
    response = await client.get("/readyz")
    assert response.status_code == 503
    detail = response.json()
    assert detail["torchserve"] == "up" and detail["ready"] is False
    assert detail["models"]["a"]["ready"] is True and detail["models"]["b"]["ready"] is False
    assert detail["models"]["b"]["versions"]["1.0"] == {
        "ready": False,
        "minWorkers": 1,
        "readyWorkers": 0,
    }

    fake.handler = management_api({"a": ["READY"], "b": ["READY"]})
    response = await client.get("/readyz")
    assert response.status_code == 200 and response.json()["ready"] is True


async def test_metrics_are_per_app_with_bounded_labels(
    client: httpx.AsyncClient, fake: FakeTorchServe
) -> None:
    async def known_or_not(request: httpx.Request) -> httpx.Response:
        if "known" in request.url.path:
            return httpx.Response(200, content=b"ok")
        body = {"code": 404, "type": "ModelNotFoundException", "message": "Model not found"}
        return httpx.Response(404, json=body)

    fake.handler = known_or_not
    await client.post("/predictions/known", content=b"x", headers=INF)
    for i in range(5):
        await client.post(f"/predictions/made-up-{i}", content=b"x", headers=INF)
    text = (await client.get("/metrics")).text
    known = 'method="POST",model="known",route="/predictions/{model}",status="200"} 1.0'
    assert "gateway_requests_total{" + known in text
    assert 'model="",route="/predictions/{model}",status="404"} 5.0' in text
    assert "made-up" not in text
    assert 'gateway_upstream_errors_total{kind="ModelNotFound"} 5.0' in text
    assert "gateway_request_duration_seconds_bucket" in text

    async with gateway(settings(Path(".")), httpx.MockTransport(fake)) as other:
        assert "known" not in (await other.get("/metrics")).text


async def test_openapi_documents_every_route(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    expected = {
        "/predictions/{model}": {"post"},
        "/predictions/{model}/{version}": {"post"},
        "/models": {"get", "post"},
        "/models/{model}": {"get", "put"},
        "/models/{model}/{version}": {"get", "put", "delete"},
        "/models/{model}/{version}/set-default": {"put"},
        "/healthz": {"get"},
        "/readyz": {"get"},
        "/metrics": {"get"},
    }
    for path, methods in expected.items():
        assert set(paths[path]) == methods, path
    assert "HTTPBearer" in json.dumps(spec["components"]["securitySchemes"])
    page = (await client.get("/docs")).text
    assert "/docs/assets/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
