"""The one ASGI middleware: request id, the in-flight bound, metrics, the last-resort 500.

Plain ASGI rather than `BaseHTTPMiddleware`, which would add a task and a stream per
request. For each HTTP request it:
- takes the client's `X-Request-ID` or makes one (`scope[REQUEST_ID_KEY]`), and returns it;
- refuses a proxied request (`/predictions`, `/models`, `/v2/models/`) beyond
  GATEWAY_MAX_IN_FLIGHT with 503 `Overloaded` and `Retry-After`, before any other work.
  The bound counts requests waiting on TorchServe: one with a body takes its place
  (`InFlightSlot`) only once its body is complete (a slow upload holds none while it
  trickles) or when it is forwarded, whichever is first; one without, at once;
- hands `POST /predictions/...` to the fast path it was given, which answers it without
  Starlette's router (the hot path; see `service.routes.inference.serve_prediction`);
- records the answer in `GatewayMetrics` under the route template that matched;
- logs an exception nothing else handled with its request id, and answers it in the one
  error format (500) with no detail, unless an answer was already started (behind it,
  FastAPI's own stack answers its routes' exceptions itself: `handle_unexpected`).

`service.app.GatewayApp` puts it in front of all of FastAPI's stack.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import GatewayError, Overloaded
from service.headers import REQUEST_ID_HEADER, request_id_from
from service.metrics import NO_MODEL, UNMATCHED_ROUTE, GatewayMetrics

logger = logging.getLogger(__name__)

REQUEST_ID_KEY = "gateway.request_id"
# The request's `InFlightSlot` (bounded routes only): `take_in_flight_slot` before waiting
# on TorchServe.
SLOT_KEY = "gateway.in_flight_slot"
# Set by a route once TorchServe answered for a model without a 404 (see metrics.py).
MODEL_KEY = "gateway.model"
_BOUNDED_PREFIXES = ("/predictions/", "/models", "/v2/models/")
# Serves a request itself and returns True, or returns False to leave it to the app.
FastPath = Callable[[Scope, Receive, Send], Awaitable[bool]]
# The error body for a request path (a protocol's own error shape), or None for the one format.
ErrorBody = Callable[[str, GatewayError], bytes | None]


async def send_error(
    send: Send, error: GatewayError, request_id: bytes, body: bytes | None = None
) -> None:
    """Send `error` as a complete response (`body`, default: the one error format)."""
    body = body or error.body()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (REQUEST_ID_HEADER, request_id),
        *error.headers(),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class InFlightSlot:
    """A bounded request's place among GATEWAY_MAX_IN_FLIGHT, taken at most once."""

    __slots__ = ("_owner", "held")

    def __init__(self, owner: GatewayMiddleware) -> None:
        self._owner = owner
        self.held = False

    def take(self) -> None:
        """Take the place (no-op if held); raises `Overloaded` when none is free."""
        if self.held:
            return
        owner = self._owner
        if owner.in_flight >= owner.max_in_flight:
            raise Overloaded()
        owner.in_flight += 1
        owner.metrics.in_flight.inc()
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._owner.in_flight -= 1
            self._owner.metrics.in_flight.dec()

    def taking_on_complete_body(self, receive: Receive) -> Receive:
        """`receive` that takes the place with the body's last part (may raise `Overloaded`)."""

        async def receive_counted() -> Message:
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                self.take()
            return message

        return receive_counted


def take_in_flight_slot(scope: Scope) -> None:
    """Count the request as waiting on TorchServe (raises `Overloaded` when the bound is
    reached); a no-op for a request outside the bound or already counted."""
    slot: InFlightSlot | None = scope.get(SLOT_KEY)
    if slot is not None:
        slot.take()


def _declares_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
        if name == b"transfer-encoding":
            return True
    return False


class GatewayMiddleware:
    """See the module docstring; one instance per app, so the in-flight count is per app."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: GatewayMetrics,
        max_in_flight: int,
        fast_path: FastPath | None = None,
        error_body: ErrorBody | None = None,
    ) -> None:
        self.app = app
        self.error_body = error_body
        self.metrics = metrics
        self.max_in_flight = max_in_flight
        self.fast_path = fast_path
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = request_id_from(scope["headers"])
        scope[REQUEST_ID_KEY] = request_id
        bounded = scope["path"].startswith(_BOUNDED_PREFIXES)
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                message["headers"] = [*message["headers"], (REQUEST_ID_HEADER, request_id)]
            await send(message)

        slot = None
        if bounded:
            slot = scope[SLOT_KEY] = InFlightSlot(self)
            try:
                if self.in_flight >= self.max_in_flight:
                    raise Overloaded()  # full already: refused before reading anything
                if _declares_body(scope["headers"]):
                    receive = slot.taking_on_complete_body(receive)
                else:
                    slot.take()
            except Overloaded as error:
                await send_error(send, error, request_id, self._body(scope, error))
                self._observe(scope, error.status, start)
                return
        try:
            if self.fast_path is None or not await self.fast_path(scope, receive, send_with_id):
                await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("Unhandled error (request id %s)", request_id.decode())
            if not started:
                status = 500
                failure = GatewayError()
                await send_error(send, failure, request_id, self._body(scope, failure))
        finally:
            if slot is not None:
                slot.release()
            self._observe(scope, status, start)

    def _body(self, scope: Scope, error: GatewayError) -> bytes | None:
        return None if self.error_body is None else self.error_body(scope["path"], error)

    def _observe(self, scope: Scope, status: int, start: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", UNMATCHED_ROUTE)
        model = scope.get(MODEL_KEY, NO_MODEL)
        elapsed = time.perf_counter() - start
        self.metrics.observe(template, scope["method"], model, status, elapsed)
