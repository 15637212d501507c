"""The gateway's HTTP/1.1 protocol: uvicorn's httptools protocol with client time limits.

uvicorn bounds an idle keep-alive connection (`timeout_keep_alive`) and nothing else: a
client may take forever to send its headers or its body, and there is no limit on open
connections that answers at once (`--limit-concurrency` answers only once a request's headers
are complete). This subclass adds, per connection, with the gateway's settings
(`service.settings.GatewaySettings`):

- GATEWAY_HEADER_TIMEOUT_S: from the connection's start, or from a new request's first
  byte, its headers must be complete; else the connection is closed (nothing is answered:
  there is no request to answer).
- GATEWAY_BODY_TIMEOUT_S: from the end of the headers, the body must be complete; else the
  client gets 408 `RequestTimeout` (if nothing was answered yet), the app sees the client
  leave (`http.disconnect`), and the connection is closed (the gateway ends its side at
  once, then drops what the client still sends for at most LINGER_S, so that the 408 is
  not lost to a reset).
- GATEWAY_KEEPALIVE_S: uvicorn's keep-alive timeout, set from the gateway's settings.
- GATEWAY_MAX_CONNECTIONS: a connection beyond it gets 503 `Overloaded` and is closed at
  once, before anything is read.

The launcher runs uvicorn with `--http service.http_protocol:GatewayHttpProtocol`. All of
it is event-loop timers on the connection: no task or thread per connection.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import resource
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.errors import GatewayError, Overloaded, RequestTimeout
from service.settings import GatewaySettings

logger = logging.getLogger(__name__)

# After a 408, how long the client may take to read it and close before the gateway closes.
LINGER_S = 2.0
# File descriptors the gateway needs besides client connections: its upstream pool, logs...
_SPARE_FDS = 512


@dataclass(frozen=True)
class ClientLimits:
    header_timeout_s: float
    body_timeout_s: float
    keepalive_s: float
    max_connections: int


def raw_response(error: GatewayError) -> bytes:
    """A complete HTTP/1.1 response for `error` in the one error format, closing."""
    body = error.body()
    head = [
        f"HTTP/1.1 {error.status} {_REASONS.get(error.status, '')}".rstrip(),
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{name.decode()}: {value.decode()}" for name, value in error.headers()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


_REASONS = {408: "Request Timeout", 503: "Service Unavailable"}


@functools.cache
def client_limits() -> ClientLimits:
    """The limits from the environment, read once per process (at its first connection),
    and the open-file limit raised to fit GATEWAY_MAX_CONNECTIONS where the hard limit allows."""
    settings = GatewaySettings()
    limits = ClientLimits(
        header_timeout_s=settings.gateway_header_timeout_s,
        body_timeout_s=settings.gateway_body_timeout_s,
        keepalive_s=settings.gateway_keepalive_s,
        max_connections=settings.gateway_max_connections,
    )
    raise_open_file_limit(limits.max_connections + _SPARE_FDS)
    return limits


def raise_open_file_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards `wanted` (never above the hard limit,
    never lowering it); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft < wanted:
        logger.warning(
            "open-file limit %d is below GATEWAY_MAX_CONNECTIONS plus %d spare: connections "
            "beyond it will fail to be accepted rather than get 503",
            soft,
            _SPARE_FDS,
        )
    return soft


class GatewayHttpProtocol(HttpToolsProtocol):
    """See the module docstring."""

    def __init__(self, *args: Any, limits: ClientLimits | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits or client_limits()
        self.timeout_keep_alive = self.limits.keepalive_s  # type: ignore[assignment] # call_later takes float
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._discarding = False  # after a 408: the client's bytes are no longer read

    # --- connection -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[arg-type]
        if len(self.connections) > self.limits.max_connections:
            self.transport.write(_TOO_MANY_CONNECTIONS)
            self.transport.close()
            return
        self._header_timer = self.loop.call_later(
            self.limits.header_timeout_s, self._headers_too_slow
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    # --- parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        # A new request's first byte: its headers must now arrive in time.
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(
                self.limits.header_timeout_s, self._headers_too_slow
            )
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_too_slow)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    # --- timeouts -------------------------------------------------------------------------

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = self._linger_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _body_too_slow(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None:
            if not cycle.response_started:
                self.transport.write(_BODY_TIMEOUT)
            # The app, waiting for the rest of the body, sees the client leave; whatever it
            # answers is dropped (uvicorn sends nothing once a cycle is disconnected).
            cycle.disconnected = True
            cycle.message_event.set()
        self._close_lingering()

    def _close_lingering(self) -> None:
        # Closing a socket with unread bytes from the client resets it, and a reset can
        # destroy the 408 before the client reads it: end our side (FIN), drop whatever
        # still arrives, and close once the client has closed or after LINGER_S.
        self._discarding = True
        try:
            self.transport.write_eof()
        except (OSError, NotImplementedError, RuntimeError):
            self.transport.close()
            return
        self._linger_timer = self.loop.call_later(LINGER_S, self.transport.close)

    def data_received(self, data: bytes) -> None:
        if not self._discarding:
            super().data_received(data)

    def eof_received(self) -> None:
        if self._discarding:
            self.transport.close()
        super().eof_received()


_TOO_MANY_CONNECTIONS = raw_response(
    Overloaded("The gateway has as many client connections open as it allows; retry later.")
)
_BODY_TIMEOUT = raw_response(
    RequestTimeout("The request body did not arrive in time (GATEWAY_BODY_TIMEOUT_S).")
)
