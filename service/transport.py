"""An httpx transport that sends requests with aiohttp: httpx's API at aiohttp's speed.

Why not httpx's own `AsyncHTTPTransport`: its pure-Python HTTP/1.1 stack (httpcore + h11 +
anyio locks) costs about a millisecond of CPU per request (encode/httpx#3215), most of the
gateway's budget. Why not `httpx_aiohttp.AiohttpTransport`: it maps every
`aiohttp.ClientConnectionError` (a server that hung up, too) to `httpx.ConnectTimeout`, and
wraps each body in a chunk iterator. This one reads the whole body (the gateway always
does) and maps aiohttp's errors to the httpx exception that says what happened. The
measurement behind the choice: `python -m service.bench_transports` (README, "Gateway").
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import httpx
from yarl import URL

# httpx's client adds these itself; aiohttp must not add its own variants.
_SKIP_AUTO_HEADERS = frozenset({"Accept", "Accept-Encoding", "User-Agent", "Content-Type"})


def map_aiohttp_error(exc: BaseException) -> httpx.TransportError:
    """Return the httpx exception that means what the aiohttp (or asyncio) exception `exc` means.

    Order matters: aiohttp's classes inherit from each other (a connect timeout is a
    `ServerTimeoutError` is an `asyncio.TimeoutError`; a refused connection is a
    `ClientOSError` is a `ClientConnectionError`).
    """
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(exc, TimeoutError):
        return httpx.TimeoutException(message)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientResponseError):
        return httpx.RemoteProtocolError(message)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return httpx.ReadError(message)
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return httpx.UnsupportedProtocol(message)
    if isinstance(exc, aiohttp.ClientOSError | OSError):
        return httpx.NetworkError(message)
    return httpx.TransportError(message)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Send httpx requests over one pooled `aiohttp.ClientSession`, reading each body whole.

    Honours the per-request timeouts httpx puts in `request.extensions["timeout"]`
    (`connect` -> aiohttp's `sock_connect`, `read` -> `sock_read`, `pool` -> `connect`,
    which in aiohttp covers waiting for a pooled connection). Raises `httpx.TransportError`
    subclasses only (see `map_aiohttp_error`).
    """

    def __init__(self, *, max_connections: int = 100, keepalive_expiry: float = 30.0) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[Any, ...], aiohttp.ClientTimeout] = {}
        self._urls: dict[str, URL] = {}

    def _open(self) -> aiohttp.ClientSession:
        # Created on first use: a ClientSession must be made inside the running loop.
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            keepalive_timeout=self._keepalive_expiry,
            use_dns_cache=True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        return self._session

    def _url(self, url: httpx.URL) -> URL:
        # httpx has already parsed and encoded it; yarl need not do it again. Bounded cache.
        text = str(url)
        parsed = self._urls.get(text)
        if parsed is None:
            if len(self._urls) >= 1024:
                self._urls.clear()
            parsed = self._urls[text] = URL(text, encoded=True)
        return parsed

    def _timeout(self, timeout: dict[str, float | None]) -> aiohttp.ClientTimeout:
        key = (timeout.get("connect"), timeout.get("read"), timeout.get("pool"))
        cached = self._timeouts.get(key)
        if cached is None:
            cached = aiohttp.ClientTimeout(sock_connect=key[0], sock_read=key[1], connect=key[2])
            self._timeouts[key] = cached
        return cached

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        try:
            async with session.request(
                request.method,
                self._url(request.url),
                headers=request.headers.multi_items(),
                data=request.content or None,
                allow_redirects=False,
                compress=None,
                timeout=self._timeout(request.extensions.get("timeout", {})),
            ) as response:
                body = await response.read()
                raw_headers = response.raw_headers
                status = response.status
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise map_aiohttp_error(exc) from exc
        return httpx.Response(
            status_code=status,
            headers=list(raw_headers),
            content=body,
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
