"""Measure what each HTTP transport costs the gateway per proxied request.

    python -m service.bench_transports [--requests 3000] [--concurrency 32]

Starts a minimal HTTP/1.1 upstream in a child process (a raw uvloop protocol answering a
fixed JSON body at once, so the client's cost is what is measured), then sends the same
POST through each candidate, all behind `httpx.AsyncClient`'s API except the raw aiohttp
reference, and prints: p50 latency at concurrency 1, CPU microseconds per request in the
client process, and requests per second at the given concurrency. The gateway's transport
(`GATEWAY_UPSTREAM_TRANSPORT`) defaults to the winner on the machine this was written on;
the figures are in the README ("Gateway", "HTTP transport").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import cast

import aiohttp
import httptools
import httpx
import uvloop

from service.transport import AiohttpTransport

_BODY = b'{"prediction": [0.1, 0.2, 0.7], "label": 2}'
_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(_BODY)).encode()
    + b"\r\n\r\n"
    + _BODY
)
_PAYLOAD = b'{"data": [1.0, 2.0, 3.0, 4.0]}'


class _FixedResponse(asyncio.Protocol):
    """Answer every parsed HTTP request with `_RESPONSE`, keeping the connection open."""

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_message_complete(self) -> None:
        assert self._transport is not None
        self._transport.write(_RESPONSE)


def _serve(sock: socket.socket) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_FixedResponse, sock=sock)
        await server.serve_forever()

    uvloop.run(main())


Send = Callable[[], Awaitable[int]]


async def _measure(send: Send, requests: int, concurrency: int) -> tuple[float, float, float]:
    for _ in range(200):  # warm the pool and the code paths
        await send()
    latencies = []
    cpu0 = time.process_time()
    for _ in range(requests):
        t0 = time.perf_counter()
        await send()
        latencies.append(time.perf_counter() - t0)
    cpu_us = (time.process_time() - cpu0) / requests * 1e6

    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await send()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    rps = requests / (time.perf_counter() - t0)
    return statistics.median(latencies) * 1e6, cpu_us, rps


async def _run(url: str, requests: int, concurrency: int, rounds: int) -> None:
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    candidates: dict[str, Callable[[], httpx.AsyncBaseTransport]] = {
        "httpx AsyncHTTPTransport (httpcore)": lambda: httpx.AsyncHTTPTransport(limits=limits),
        "httpx_aiohttp.AiohttpTransport": _httpx_aiohttp,
        "service.transport.AiohttpTransport": lambda: AiohttpTransport(max_connections=100),
    }
    headers = {"content-type": "application/json"}
    senders: dict[str, Send] = {}
    async with contextlib.AsyncExitStack() as stack:
        for name, make in candidates.items():
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=make(), timeout=5.0)
            )

            async def send(client: httpx.AsyncClient = client) -> int:
                response = await client.post(url, content=_PAYLOAD, headers=headers)
                return response.status_code

            senders[name] = send

        # The gateway's hot path: one prebuilt httpx.Request handed to the transport, skipping
        # AsyncClient.send's auth, redirect, cookie and event-hook machinery.
        transport = AiohttpTransport(max_connections=100)
        stack.push_async_callback(transport.aclose)
        timeout = {"connect": 1.0, "read": 5.0, "write": 5.0, "pool": 5.0}

        async def direct() -> int:
            request = httpx.Request("POST", url, headers=headers, content=_PAYLOAD)
            request.extensions["timeout"] = timeout
            response = await transport.handle_async_request(request)
            return response.status_code

        senders["service.transport, request sent directly"] = direct

        session = await stack.enter_async_context(aiohttp.ClientSession())

        async def raw() -> int:
            async with session.post(url, data=_PAYLOAD, headers=headers) as response:
                await response.read()
                return response.status

        senders["raw aiohttp (reference, not httpx API)"] = raw

        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in senders}
        for _ in range(rounds):  # interleaved rounds: machine noise hits every candidate alike
            for name, send_one in senders.items():
                results[name].append(await _measure(send_one, requests, concurrency))

    print(f"best of {rounds} interleaved rounds, {requests} requests each")
    print(
        f"{'transport':42} {'p50 us (c=1)':>13} {'CPU us/req':>11} {f'req/s (c={concurrency})':>13}"
    )
    for name, runs in results.items():
        p50 = min(r[0] for r in runs)
        cpu = min(r[1] for r in runs)
        rps = max(r[2] for r in runs)
        print(f"{name:42} {p50:13.0f} {cpu:11.0f} {rps:13.0f}")


def _httpx_aiohttp() -> httpx.AsyncBaseTransport:
    from httpx_aiohttp import AiohttpTransport as HttpxAiohttpTransport

    return HttpxAiohttpTransport()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(sock,))
    server.start()
    try:
        url = f"http://127.0.0.1:{port}/predictions/m"
        uvloop.run(_run(url, args.requests, args.concurrency, args.rounds))
    finally:
        server.terminate()
        server.join()
        sock.close()


if __name__ == "__main__":
    main()
