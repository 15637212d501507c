"""Each of the gateway's upstream, readiness and batching settings changes what it does.

`test_settings.py` checks that every variable is read; these check that each one is used:
the gateway (the whole app over ASGI) in front of a real socket server on 127.0.0.1 where
the wire matters (transport, pool size, connect timeout), and in front of a fake TorchServe
where only the timing of TorchServe's answers matters (readiness).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from handlers import envelope
from service.settings import GatewaySettings
from tests.unit.service.test_app import INF, FakeTorchServe, assert_error, gateway, settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class RawUpstream:
    """An HTTP/1.1 server on 127.0.0.1 that records each request's head and holds every
    answer `hold_s` seconds, counting how many requests it holds at once."""

    def __init__(self, hold_s: float = 0.0) -> None:
        self.hold_s = hold_s
        self.heads: list[bytes] = []
        self.active = 0
        self.most_active = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:  # keep-alive: one connection may carry many requests
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                self.heads.append(head)
                self.active += 1
                self.most_active = max(self.most_active, self.active)
                await asyncio.sleep(self.hold_s)
                self.active -= 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[int]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        async with server:
            yield server.sockets[0].getsockname()[1]


def at(tmp_path: Path, port: int, **overrides: object) -> GatewaySettings:
    return settings(
        tmp_path, torchserve_inference_port=port, torchserve_management_port=port, **overrides
    )


@pytest.mark.parametrize("transport", ["aiohttp", "httpcore"])
async def test_upstream_transport_is_the_one_named(tmp_path: Path, transport: str) -> None:
    # The two put the Host header on the wire differently: httpcore (h11) as httpx spells it,
    # our aiohttp transport lower-cased, as httpx's multi_items() hands it the headers.
    upstream = RawUpstream()
    async with upstream.running() as port:
        s = at(tmp_path, port, gateway_upstream_transport=transport)
        async with gateway(s, None) as c:
            answer = await c.post("/predictions/m", content=b"abc", headers=INF)
    assert answer.status_code == 200 and answer.content == b"ok"
    (head,) = upstream.heads
    host_line = next(line for line in head.split(b"\r\n") if line.lower().startswith(b"host:"))
    assert host_line.startswith(b"Host:" if transport == "httpcore" else b"host:"), head


@pytest.mark.parametrize("transport", ["aiohttp", "httpcore"])
async def test_upstream_connections_bounds_the_requests_at_torchserve(
    tmp_path: Path, transport: str
) -> None:
    for connections, expected_most in ((2, 2), (100, 6)):
        upstream = RawUpstream(hold_s=0.3)
        async with upstream.running() as port:
            s = at(
                tmp_path,
                port,
                gateway_upstream_transport=transport,
                gateway_upstream_connections=connections,
            )
            async with gateway(s, None) as c:
                answers = await asyncio.gather(
                    *(c.post("/predictions/m", content=b"x", headers=INF) for _ in range(6))
                )
        assert [a.status_code for a in answers] == [200] * 6
        assert upstream.most_active == expected_most, (connections, upstream.most_active)


@contextlib.contextmanager
def listener_that_never_accepts() -> Iterator[int]:
    """A port whose accept queue is full: the kernel drops new SYNs, a connect hangs."""
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(socket.socket())
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        for _ in range(3):  # more than a backlog of 0 holds
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
        probe = stack.enter_context(socket.socket())
        probe.settimeout(0.5)
        with pytest.raises(TimeoutError):  # the premise: connecting hangs
            probe.connect(("127.0.0.1", port))
        yield port


@pytest.mark.parametrize("transport", ["aiohttp", "httpcore"])
async def test_a_connect_that_hangs_is_a_503_after_the_connect_timeout(
    tmp_path: Path, transport: str
) -> None:
    with listener_that_never_accepts() as port:
        for connect_timeout in (0.3, 1.5):
            s = at(
                tmp_path,
                port,
                gateway_upstream_transport=transport,
                gateway_connect_timeout_s=connect_timeout,
                gateway_timeout_s=20.0,
            )
            async with gateway(s, None) as c:
                start = time.monotonic()
                answer = await c.post("/predictions/m", content=b"x", headers=INF)
                elapsed = time.monotonic() - start
            # Unreachable (503 at the connect timeout), not a 504 after GATEWAY_TIMEOUT_S.
            assert_error(answer, 503, "UpstreamUnavailable")
            assert connect_timeout <= elapsed < connect_timeout + 3.0, elapsed


def described(name: str) -> list[dict[str, object]]:
    return [{"modelVersion": "1.0", "minWorkers": 1, "workers": [{"status": "READY"}]}]


async def test_readiness_concurrency_bounds_the_descriptions_at_once(tmp_path: Path) -> None:
    names = [f"m{i}" for i in range(6)]
    active = most_active = 0

    async def management(request: httpx.Request) -> httpx.Response:
        nonlocal active, most_active
        if request.url.path == "/models":
            return httpx.Response(200, json={"models": [{"modelName": n} for n in names]})
        active += 1
        most_active = max(most_active, active)
        await asyncio.sleep(0.05)  # overlap, so that an unbounded check would show it
        active -= 1
        return httpx.Response(200, json=described(request.url.path.split("/")[2]))

    for concurrency, expected_most in ((2, 2), (8, 6)):
        most_active = 0
        s = settings(tmp_path, gateway_readiness_concurrency=concurrency)
        async with gateway(s, httpx.MockTransport(management)) as c:
            ready = await c.get("/readyz")
        assert ready.status_code == 200 and set(ready.json()["models"]) == set(names)
        assert most_active == expected_most, (concurrency, most_active)


async def test_readiness_timeout_bounds_each_call(tmp_path: Path) -> None:
    async def management(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/models":
            return httpx.Response(
                200, json={"models": [{"modelName": "ok"}, {"modelName": "stuck"}]}
            )
        if request.url.path.startswith("/models/stuck"):
            await asyncio.sleep(60)
        return httpx.Response(200, json=described("ok"))

    # GATEWAY_TIMEOUT_S is long: only the readiness timeout can end the stuck call.
    s = settings(tmp_path, gateway_readiness_timeout_s=0.3, gateway_timeout_s=30.0)
    async with gateway(s, httpx.MockTransport(management)) as c:
        start = time.monotonic()
        ready = await c.get("/readyz")
        elapsed = time.monotonic() - start
    assert ready.status_code == 503
    models = ready.json()["models"]
    assert models["ok"]["ready"] is True
    assert models["stuck"]["ready"] is False and "error" in models["stuck"]
    assert 0.3 <= elapsed < 3.0, elapsed


async def test_batch_max_items_1_turns_batching_off(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def held(request: httpx.Request) -> httpx.Response:
        # Says it reads envelopes, then holds every prediction after the first.
        if len(fake.requests) > 1:
            await release.wait()
        headers = {envelope.ACCEPTS_HEADER: "1"}
        return httpx.Response(200, headers=headers, content=b"echo:" + request.content)

    fake = FakeTorchServe()
    fake.handler = held
    s = settings(tmp_path, gateway_batch_in_flight=1, gateway_batch_max_items=1)
    async with gateway(s, httpx.MockTransport(fake)) as c:
        assert (await c.post("/predictions/m", content=b"teach", headers=INF)).status_code == 200
        tasks = [
            asyncio.create_task(c.post("/predictions/m", content=f"{i}".encode(), headers=INF))
            for i in range(6)
        ]
        # Batching on, five of these would wait in the gateway for the first to come back.
        async with asyncio.timeout(10):
            while len(fake.requests) < 7:
                await asyncio.sleep(0.005)
        release.set()
        answers = await asyncio.gather(*tasks)
    assert [a.content for a in answers] == [f"echo:{i}".encode() for i in range(6)]
    assert all(r.headers.get("content-type") != envelope.CONTENT_TYPE for r in fake.requests)


def test_the_gateway_reads_no_setting_it_does_not_use() -> None:
    # TorchServe's metrics port is the launcher's (launcher.settings); the gateway never
    # calls it, so it does not read it either.
    assert "torchserve_metrics_port" not in GatewaySettings.model_fields
