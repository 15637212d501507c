"""Hostile clients over real HTTP against the real gateway and TorchServe: 300 slow-body and
2,000 slow-header clients at once while a normal client keeps predicting; idle keep-alive
connections; the connection bound.

The gateway runs with short limits (settings below) so the test takes seconds, and with
GATEWAY_MAX_IN_FLIGHT below the number of slow uploads: if a slow upload held an in-flight
place while its body trickled, the normal client would get 503s. Every slow client keeps
sending a byte at a time, so only the absolute time limits (not an idle timeout) can close
them. The normal client's latencies are printed and written to `slow_clients.json` in the
test's temp directory.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from launcher.gateway import Gateway
from launcher.torchserve import TorchServe
from service.http_protocol import raise_open_file_limit
from tests.integration.service.conftest import GATEWAY_ENV, INF, INF_KEY
from tests.support.servers import running_gateway

pytestmark = pytest.mark.integration

SLOW_BODIES = 300
SLOW_HEADERS = 2000
HEADER_TIMEOUT_S = 4.0
BODY_TIMEOUT_S = 5.0
KEEPALIVE_S = 1.0
MAX_IN_FLIGHT = 64  # < SLOW_BODIES
# The shared 2-core machine may be slow to run the timers and to read the closes: a close
# counts as on time if it came after the limit and within this much of it.
LATE_S = 15.0
TRICKLE_S = 1.0


@pytest.fixture(scope="module")
def limited(torchserve: TorchServe) -> Iterator[Gateway]:
    raise_open_file_limit(SLOW_BODIES + SLOW_HEADERS + 1024)
    env = {
        **GATEWAY_ENV,
        "GATEWAY_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "GATEWAY_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "GATEWAY_KEEPALIVE_S": str(KEEPALIVE_S),
        "GATEWAY_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT),
        "GATEWAY_MAX_CONNECTIONS": str(SLOW_BODIES + SLOW_HEADERS + 200),
    }
    with running_gateway(torchserve, env=env) as gateway:
        yield gateway


@dataclass
class Closed:
    """How one slow connection ended: seconds from its deadline's start to the server's
    close, and what the server sent."""

    after_s: float
    answer: bytes


def host_port(gateway: Gateway) -> tuple[str, int]:
    return gateway.settings.gateway_host, gateway.settings.gateway_port


async def read_until_closed(reader: asyncio.StreamReader, limit_s: float) -> bytes:
    """Everything the server sent until it closed (a reset counts as closed: a server that
    closes with unread bytes from us resets rather than ends the connection)."""
    answer = b""
    async with asyncio.timeout(limit_s):
        try:
            while chunk := await reader.read(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    return answer


async def trickle_until_closed(
    writer: asyncio.StreamWriter, reader: asyncio.StreamReader, byte: bytes, limit_s: float
) -> bytes:
    """Send `byte` every TRICKLE_S until the server closes; what it sent."""
    reading = asyncio.ensure_future(read_until_closed(reader, limit_s))
    try:
        while not reading.done():
            try:
                writer.write(byte)
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.wait([reading], timeout=TRICKLE_S)
        return await reading
    finally:
        writer.close()


async def slow_header(host: str, port: int, send_nothing: bool) -> Closed:
    # Timed from before connecting: the gateway's clock starts at its accept, later than this,
    # so the measured time is never shorter than the limit (a busy client loop only adds).
    start = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    limit = HEADER_TIMEOUT_S + LATE_S
    if send_nothing:
        answer = await read_until_closed(reader, limit)
        writer.close()
    else:
        writer.write(b"POST /predictions/echo HTTP/1.1\r\nHost: gw\r\nX-Slow: ")
        answer = await trickle_until_closed(writer, reader, b"a", limit)
    return Closed(time.monotonic() - start, answer)


async def slow_body(host: str, port: int) -> Closed:
    reader, writer = await asyncio.open_connection(host, port)
    start = time.monotonic()  # before the headers leave: the gateway's clock starts later
    writer.write(
        b"POST /predictions/echo HTTP/1.1\r\nHost: gw\r\n"
        + f"Authorization: Bearer {INF_KEY}\r\n".encode()
        + b"Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n"
    )
    await writer.drain()
    answer = await trickle_until_closed(writer, reader, b"x", BODY_TIMEOUT_S + LATE_S)
    return Closed(time.monotonic() - start, answer)


async def hostile_crowd(gateway: Gateway) -> tuple[list[Closed], list[Closed]]:
    host, port = host_port(gateway)
    bodies = [asyncio.ensure_future(slow_body(host, port)) for _ in range(SLOW_BODIES)]
    headers = [
        asyncio.ensure_future(slow_header(host, port, send_nothing=i % 10 == 0))
        for i in range(SLOW_HEADERS)
    ]
    return list(await asyncio.gather(*bodies)), list(await asyncio.gather(*headers))


class NormalClient(threading.Thread):
    """Sequential predictions until stopped, on its own thread and connection."""

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(daemon=True)
        self.url = f"{gateway.url}/predictions/echo"
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.statuses: list[int] = []

    def run(self) -> None:
        with httpx.Client(trust_env=False, timeout=60.0) as client:
            while not self.stop.is_set():
                start = time.perf_counter()
                try:
                    status = client.post(self.url, content=b"abc", headers=INF).status_code
                except httpx.HTTPError as exc:
                    status = -1
                    print(f"normal client: {exc!r}")
                self.latencies.append(time.perf_counter() - start)
                self.statuses.append(status)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else 0


def open_fds(gateway: Gateway) -> int:
    assert gateway.pid is not None
    return psutil.Process(gateway.pid).num_fds()


def test_slow_clients_are_closed_on_time_while_a_normal_client_keeps_predicting(
    limited: Gateway, tmp_path: Path
) -> None:
    fds_before = open_fds(limited)
    normal = NormalClient(limited)
    normal.start()
    try:
        bodies, headers = asyncio.run(hostile_crowd(limited))
    finally:
        normal.stop.set()
        normal.join(60)

    # The normal client: every prediction answered 200 while the crowd was connected.
    assert len(normal.statuses) >= 10, normal.statuses
    assert set(normal.statuses) == {200}, {s: normal.statuses.count(s) for s in normal.statuses}
    p50, p99 = percentile(normal.latencies, 50), percentile(normal.latencies, 99)
    figures = {
        "slow_body_clients": SLOW_BODIES,
        "slow_header_clients": SLOW_HEADERS,
        "normal_predictions": len(normal.latencies),
        "normal_p50_ms": round(p50 * 1000, 2),
        "normal_p99_ms": round(p99 * 1000, 2),
        "normal_max_ms": round(max(normal.latencies) * 1000, 2),
        "slow_body_closed_after_s": [
            round(min(c.after_s for c in bodies), 2),
            round(max(c.after_s for c in bodies), 2),
        ],
        "slow_header_closed_after_s": [
            round(min(c.after_s for c in headers), 2),
            round(max(c.after_s for c in headers), 2),
        ],
    }
    (tmp_path / "slow_clients.json").write_text(json.dumps(figures, indent=2))
    print(f"\nslow clients: {json.dumps(figures)}")

    # Slow bodies: 408 in the one error format, then closed, after the body limit.
    for closed in bodies:
        assert closed.answer.startswith(b"HTTP/1.1 408 "), closed.answer[:200]
        head, _, body = closed.answer.partition(b"\r\n\r\n")
        assert b"connection: close" in head.lower()
        assert json.loads(body)["type"] == "RequestTimeout"
        assert BODY_TIMEOUT_S - 0.1 <= closed.after_s <= BODY_TIMEOUT_S + LATE_S, closed
    # Slow headers (trickling or silent): closed with nothing sent, after the header limit.
    for closed in headers:
        assert closed.answer == b"", closed.answer[:200]
        assert HEADER_TIMEOUT_S - 0.1 <= closed.after_s <= HEADER_TIMEOUT_S + LATE_S, closed

    # Every connection the crowd opened is gone from the gateway (no leaked descriptors).
    deadline = time.monotonic() + 30
    while open_fds(limited) > fds_before + 20 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert open_fds(limited) <= fds_before + 20, (fds_before, open_fds(limited))


async def idle_after_one_request(gateway: Gateway) -> tuple[bytes, float]:
    host, port = host_port(gateway)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
    await writer.drain()
    answer = await reader.readuntil(b'{"status":"ok"}')
    start = time.monotonic()
    rest = await read_until_closed(reader, KEEPALIVE_S + LATE_S)
    writer.close()
    return answer + rest, time.monotonic() - start


def test_an_idle_keep_alive_connection_is_closed(limited: Gateway) -> None:
    answer, idle_s = asyncio.run(idle_after_one_request(limited))
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert KEEPALIVE_S - 0.2 <= idle_s <= KEEPALIVE_S + LATE_S


async def crowd_beyond(gateway: Gateway, held: int) -> tuple[bytes, bytes]:
    """Hold `held` connections open, then what a new one is answered, and what one is
    answered after one of the held ones left."""
    host, port = host_port(gateway)
    holders = [await asyncio.open_connection(host, port) for _ in range(held)]
    # The gateway has accepted them all once each answers a request on its connection.
    for reader, writer in holders:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        await writer.drain()
        await reader.readuntil(b'{"status":"ok"}')
    reader, writer = await asyncio.open_connection(host, port)
    refused = await read_until_closed(reader, 30)
    writer.close()
    _, leaving = holders.pop()
    leaving.close()
    await leaving.wait_closed()
    accepted = b""
    async with asyncio.timeout(30):
        while not accepted.startswith(b"HTTP/1.1 200"):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
            await writer.drain()
            accepted = await read_until_closed(reader, 30)
            writer.close()
    for _, writer in holders:
        writer.close()
    return refused, accepted


def test_connections_beyond_the_bound_get_503_and_are_closed(torchserve: TorchServe) -> None:
    env = {**GATEWAY_ENV, "GATEWAY_MAX_CONNECTIONS": "8", "GATEWAY_KEEPALIVE_S": "60"}
    with running_gateway(torchserve, env=env) as gateway:
        refused, accepted = asyncio.run(crowd_beyond(gateway, held=8))
    assert refused.startswith(b"HTTP/1.1 503 "), refused[:200]
    head, _, body = refused.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower() and b"retry-after:" in head.lower()
    assert json.loads(body)["type"] == "Overloaded"
    assert accepted.startswith(b"HTTP/1.1 200 ")
