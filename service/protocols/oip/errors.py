"""Errors on the protocol's routes: `{"error": "..."}`, the spec's `$inference_error_response`.

The statuses, headers (`Retry-After`, `WWW-Authenticate`, `Connection: close`) and sanitised
messages are those of the gateway's one error format (`service.errors`); only the body's
shape differs, as the protocol's clients read `error` (tritonclient's
`InferenceServerException`, kserve's `HTTPStatusError` message).
"""

from __future__ import annotations

import json
import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import GatewayError, RequestError, UpstreamError
from service.proxy import STATE_KEY, GatewayState

logger = logging.getLogger(__name__)

PREFIX = "/v2"


class NoSignature(RequestError):
    """The model is registered, but its archive does not describe its inputs and outputs
    (not built by this project, or not in the gateway's model store)."""

    status = 404


def error_body(error: GatewayError) -> bytes:
    """`{"error": message}` for `error`."""
    return json.dumps({"error": error.message}).encode()


def is_protocol_path(path: str) -> bool:
    """Whether `path` is one of the protocol's (its errors take the protocol's shape)."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def error_body_for_path(path: str, error: GatewayError) -> bytes | None:
    """The protocol's error body on its paths; None elsewhere (the gateway's one format).
    What the gateway's middleware answers with before any route runs (503 `Overloaded`)."""
    return error_body(error) if is_protocol_path(path) else None


def error_response(request: Request, error: GatewayError) -> Response:
    """`error` as the protocol's error response; counts and logs upstream failures as the
    gateway's one error handler does."""
    if isinstance(error, UpstreamError):
        state: GatewayState | None = request.scope.get(STATE_KEY)
        if state is not None:
            state.metrics.upstream_errors.labels(error.type_name).inc()
        logger.warning(
            "%s %s: %s (%d) (request id %s)",
            request.method,
            request.url.path,
            error.type_name,
            error.status,
            request.scope.get("gateway.request_id", b"").decode(),
        )
    response = Response(error_body(error), status_code=error.status, media_type="application/json")
    response.raw_headers.extend(error.headers())
    return response


def protocol_errors(app: ASGIApp) -> ASGIApp:
    """`app`, with the gateway's one-format errors on the protocol's paths reshaped to
    `{"error": message}` (same status and headers): what FastAPI itself answers there (an
    unknown `/v2/...` path, a method a route does not take) before any route runs."""

    async def reshaped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_protocol_path(scope["path"]):
            await app(scope, receive, send)
            return
        held: Message | None = None

        async def send_reshaped(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held = message  # until the body says whether it is the one error format
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            start, held = held, None
            body = message.get("body", b"")
            if not message.get("more_body", False):
                body = _reshaped(body)
                start = {**start, "headers": _with_length(start["headers"], len(body))}
                message = {**message, "body": body}
            await send(start)
            await send(message)

        await app(scope, receive, send_reshaped)

    return reshaped


def _reshaped(body: bytes) -> bytes:
    try:
        document = json.loads(body)
    except ValueError:
        return body
    if isinstance(document, dict) and set(document) == {"code", "type", "message"}:
        return json.dumps({"error": document["message"]}).encode()
    return body


def _with_length(headers: list[tuple[bytes, bytes]], length: int) -> list[tuple[bytes, bytes]]:
    kept = [(name, value) for name, value in headers if name.lower() != b"content-length"]
    return [*kept, (b"content-length", str(length).encode())]
