"""The one module that speaks HTTP to TorchServe.

`TorchServeClient` owns the one connection pool (an httpx transport, see
`service.transport`) for TorchServe's inference and management APIs. It turns every
failure into a `service.errors.UpstreamError`: transport failures here, TorchServe's error
answers through `service.upstream_errors.map_error_response`.

Requests go straight to the transport as prebuilt `httpx.Request`s rather than through
`httpx.AsyncClient.send`: the client's auth, redirect, cookie and event-hook machinery does
nothing for a proxy and costs about a third of the client's CPU per request at concurrency
32 (`python -m service.bench_transports`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

import httpx

from service.errors import (
    GatewayError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
    UpstreamUnreachable,
)
from service.settings import GatewaySettings, UpstreamTransport
from service.transport import AiohttpTransport
from service.upstream_errors import Api, map_error_response

logger = logging.getLogger(__name__)

_MAX_CACHED_URLS = 1024
_JSON_HEADERS = [(b"accept", b"application/json")]


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    """TorchServe's answer, read whole: status, raw headers and body bytes."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


def make_transport(settings: GatewaySettings) -> httpx.AsyncBaseTransport:
    """The httpx transport `settings.gateway_upstream_transport` names."""
    connections = settings.gateway_upstream_connections
    if settings.gateway_upstream_transport is UpstreamTransport.HTTPCORE:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        return httpx.AsyncHTTPTransport(limits=limits)
    return AiohttpTransport(max_connections=connections)


class TorchServeClient:
    """Calls TorchServe's APIs; raises `UpstreamError` subclasses only.

    Create it inside the running event loop (the app's lifespan) and `aclose` it there.
    """

    def __init__(
        self, settings: GatewaySettings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._transport = transport or make_transport(settings)
        self._bases = {
            Api.INFERENCE: settings.inference_url,
            Api.MANAGEMENT: settings.management_url,
        }
        self._deadline = settings.gateway_timeout_s
        self._urls: dict[str, httpx.URL] = {}
        self._timeouts = {
            "connect": settings.gateway_connect_timeout_s,
            "read": settings.gateway_timeout_s,
            "write": settings.gateway_timeout_s,
            "pool": settings.gateway_timeout_s,
        }

    def _parse(self, url: str) -> httpx.URL:
        # Parsing a URL is a tenth of httpx's cost per request, and a gateway sends the same
        # few URLs again and again. Bounded: emptied when full.
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) >= _MAX_CACHED_URLS:
                self._urls.clear()
            parsed = self._urls[url] = httpx.URL(url)
        return parsed

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self._transport.aclose()

    async def send(
        self,
        api: Api,
        method: str,
        path: str,
        *,
        query: bytes = b"",
        headers: list[tuple[bytes, bytes]] | None = None,
        content: bytes = b"",
        timeout: float | None = None,
    ) -> UpstreamResponse:
        """Send one request to TorchServe's `api` and return its answer, read whole.

        `path` must be built from validated parts (`service.validation`); `query` is an
        already-encoded query string. Raises `UpstreamUnavailable` (refused, reset, closed),
        `UpstreamTimeout` (nothing within `timeout`, default GATEWAY_TIMEOUT_S),
        `UpstreamProtocolError`, or the `UpstreamRejected` subclass TorchServe's error
        answer means; other answers (successes, a handler's own 4xx) are returned.
        """
        url = self._bases[api] + path
        if query:
            url = f"{url}?{query.decode('latin-1')}"
        request = httpx.Request(method, self._parse(url), headers=headers, content=content)
        request.extensions["timeout"] = self._timeouts
        deadline = self._deadline if timeout is None else timeout
        try:
            async with asyncio.timeout(deadline):
                response = await self._transport.handle_async_request(request)
                try:
                    body = await response.aread()
                finally:
                    await response.aclose()
        except TimeoutError as exc:
            raise UpstreamTimeout() from exc
        except (httpx.ConnectTimeout, httpx.ConnectError) as exc:
            # No connection: nothing was written, so the request may go elsewhere.
            raise UpstreamUnreachable() from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout() from exc
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            # Refused, reset, or closed without an answer (TorchServe stopping or restarting).
            raise UpstreamUnavailable() from exc
        except httpx.TransportError as exc:
            raise UpstreamProtocolError() from exc
        error = map_error_response(response.status_code, body, api)
        if error is not None:
            raise error
        return UpstreamResponse(response.status_code, response.headers.raw, body)

    async def get_json(self, api: Api, path: str, *, timeout: float | None = None) -> Any:
        """GET `path` on `api` and return its JSON; raises like `send`, and
        `UpstreamProtocolError` if the answer is not JSON."""
        response = await self.send(api, "GET", path, headers=_JSON_HEADERS, timeout=timeout)
        try:
            return json.loads(response.body)
        except ValueError as exc:
            raise UpstreamProtocolError("TorchServe's answer was not JSON.") from exc


def upstream_error_kind(error: GatewayError) -> str | None:
    """The `kind` label for the upstream-errors metric, or None for non-upstream errors."""
    if isinstance(error, UpstreamError):
        return error.type_name
    return None
