"""Forwarding one request to TorchServe and its answer back, shared by the routes.

The answer goes back as TorchServe sent it: status, content type and body bytes (never
parsed), minus hop-by-hop headers, plus the gateway's `X-Request-ID` (added by the
middleware). Errors are raised as `service.errors` exceptions and rendered elsewhere.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from service.auth import KeyRing
from service.batching import PredictionBatcher
from service.errors import ModelNotFound, UpstreamRejected
from service.headers import downstream_response_headers
from service.metrics import GatewayMetrics
from service.middleware import MODEL_KEY, REQUEST_ID_KEY, take_in_flight_slot
from service.settings import GatewaySettings
from service.upstream import TorchServeClient, UpstreamResponse
from service.upstream_errors import Api

# The app's `GatewayState`, put in each HTTP request's scope by `service.app.GatewayApp`.
STATE_KEY = "gateway.state"


@dataclass
class GatewayState:
    """What the routes need, on `app.state.gateway` and in each request's scope
    (`STATE_KEY`); `upstream` and `batcher` are set by the lifespan."""

    settings: GatewaySettings
    keys: KeyRing
    metrics: GatewayMetrics
    upstream: TorchServeClient | None = None
    batcher: PredictionBatcher | None = None


def gateway_state(request: Request) -> GatewayState:
    """The app's `GatewayState` (the upstream client is open while the app runs)."""
    state: GatewayState = request.scope[STATE_KEY]
    return state


def request_id(request: Request) -> bytes:
    """The request id the middleware chose for this request."""
    rid: bytes = request.scope[REQUEST_ID_KEY]
    return rid


class ProxiedResponse(Response):
    """TorchServe's answer as a Starlette response, headers taken as raw pairs."""

    def __init__(self, answer: UpstreamResponse) -> None:
        # Response.__init__ would re-encode headers from a dict; ours are already raw pairs.
        self.status_code = answer.status
        self.body = answer.body
        self.background = None
        self.raw_headers = downstream_response_headers(answer.headers)
        self.raw_headers.append((b"content-length", str(len(answer.body)).encode()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body})


async def forward(
    request: Request,
    api: Api,
    method: str,
    path: str,
    *,
    model: str | None,
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    content: bytes = b"",
) -> ProxiedResponse:
    """Send the request to TorchServe and return its answer as a response.

    `path` must be built from validated parts. Marks `model` as known to TorchServe for the
    metrics' model label once TorchServe answered anything but "not found". Raises what
    `TorchServeClient.send` raises.
    """
    upstream = gateway_state(request).upstream
    assert upstream is not None, "the lifespan opens the upstream client"
    take_in_flight_slot(request.scope)  # now waiting on TorchServe (raises Overloaded)
    call = upstream.send(api, method, path, query=query, headers=headers, content=content)
    return await _answered(request, model, call)


async def forward_prediction(
    request: Request, path: str, *, model: str, headers: list[tuple[bytes, bytes]], content: bytes
) -> ProxiedResponse:
    """Send a prediction through the gateway's batcher (`service.batching`); as `forward`."""
    batcher = gateway_state(request).batcher
    assert batcher is not None, "the lifespan opens the batcher"
    take_in_flight_slot(request.scope)
    return await _answered(request, model, batcher.predict(model, path, headers, content))


async def _answered(
    request: Request, model: str | None, call: Awaitable[UpstreamResponse]
) -> ProxiedResponse:
    try:
        answer = await call
    except UpstreamRejected as error:
        if model is not None and not isinstance(error, ModelNotFound):
            request.scope[MODEL_KEY] = gateway_state(request).metrics.model_label(model)
        raise
    if model is not None and answer.status != 404:
        request.scope[MODEL_KEY] = gateway_state(request).metrics.model_label(model)
    return ProxiedResponse(answer)
