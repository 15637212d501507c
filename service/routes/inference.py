"""`POST /predictions/{model}[/{version}]`: TorchServe's inference API through the gateway.

The hot path: check names, read the body within the limit, forward bytes, return bytes.
`serve_prediction` runs it straight from the gateway's middleware, ahead of Starlette's
router and exception middlewares; the FastAPI routes below describe it in OpenAPI and
answer what the fast path leaves to them (other methods, for a 405).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from handlers import envelope
from service.batching import ENVELOPE_TYPE
from service.body import read_body
from service.error_handlers import handle_client_disconnect, handle_gateway_error
from service.errors import GatewayError, UnsupportedMediaType, error_responses
from service.headers import upstream_request_headers
from service.proxy import (
    ProxiedResponse,
    forward,
    forward_prediction,
    gateway_state,
    request_id,
)
from service.routes.deps import InferenceAccess, check_inference_key
from service.upstream_errors import Api
from service.validation import (
    MODEL_NAME_PATTERN,
    VERSION_PATTERN,
    check_model_name,
    check_version,
)


class LeanRoute(APIRoute):
    """An APIRoute that calls its endpoint with the bare `Request`, skipping FastAPI's
    dependency solving (about a fifth of the gateway's CPU per prediction). The OpenAPI
    description still comes from the endpoint's signature; the endpoint itself must check
    the key (`check_inference_key`) and its parameters (`service.validation`)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        lean: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint.lean  # type: ignore[attr-defined]
        return lean


def lean(
    handler: Callable[[Request], Coroutine[Any, Any, Response]],
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Attach `handler(request)` as what `LeanRoute` runs for the decorated endpoint."""

    def attach(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        endpoint.lean = handler  # type: ignore[attr-defined]
        return endpoint

    return attach


# The key check is declared (for the docs' security scheme) and run by the lean handlers.
router = APIRouter(tags=["inference"], route_class=LeanRoute)

# Documented, not enforced by FastAPI: `check_model_name` answers in the one error format.
ModelName = Annotated[
    str, Path(description="Model name.", json_schema_extra={"pattern": f"^{MODEL_NAME_PATTERN}$"})
]
Version = Annotated[
    str, Path(description="Model version.", json_schema_extra={"pattern": f"^{VERSION_PATTERN}$"})
]

_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "description": "The model's input, passed to TorchServe unchanged.",
        "content": {
            "application/json": {"schema": {}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The model's answer, as TorchServe sent it.", "content": {"*/*": {}}},
    **error_responses(400, 401, 404, 413, 415, 500, 502, 503, 504, 507),
}


async def proxy_prediction(request: Request) -> ProxiedResponse:
    """Check the key and names, then forward one prediction; raises `service.errors`."""
    check_inference_key(request)
    params = request.path_params
    model: str = params["model"]
    version: str | None = params.get("version")
    path = f"/predictions/{check_model_name(model)}"
    if version is not None:
        path = f"{path}/{check_version(version)}"
    scope = request.scope
    if _is_envelope(scope["headers"]):
        raise UnsupportedMediaType(
            f"{envelope.CONTENT_TYPE} is the gateway's own format for TorchServe; send one "
            "input per request (the gateway batches concurrent requests itself)."
        )
    content = await read_body(
        scope, request.receive, gateway_state(request).settings.gateway_max_body_bytes
    )
    headers = upstream_request_headers(scope["headers"], request_id(request))
    if not scope["query_string"]:
        return await forward_prediction(
            request, path, model=model, headers=headers, content=content
        )
    return await forward(
        request,
        Api.INFERENCE,
        "POST",
        path,
        model=model,
        query=scope["query_string"],
        headers=headers,
        content=content,
    )


@router.post(
    "/predictions/{model}",
    responses=_RESPONSES,
    openapi_extra=_BODY_DOC,
    dependencies=[InferenceAccess],
)
@lean(proxy_prediction)
async def predict(model: ModelName) -> None:  # pragma: no cover - documentation only
    """Run the model's default version on the request body."""


@router.post(
    "/predictions/{model}/{version}",
    responses=_RESPONSES,
    openapi_extra=_BODY_DOC,
    dependencies=[InferenceAccess],
)
@lean(proxy_prediction)
async def predict_version(model: ModelName, version: Version) -> None:  # pragma: no cover
    """Run one version of the model on the request body."""


def _is_envelope(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == ENVELOPE_TYPE
    return False


# Starlette's `{param}` matches one path segment, as this does.
_PREDICTION_PATH = re.compile(r"/predictions/([^/]+)(?:/([^/]+))?")
_ROUTES = {route.path: route for route in router.routes if isinstance(route, APIRoute)}
_MODEL_ROUTE = _ROUTES["/predictions/{model}"]
_VERSION_ROUTE = _ROUTES["/predictions/{model}/{version}"]


async def serve_prediction(scope: Scope, receive: Receive, send: Send) -> bool:
    """Serve a prediction without Starlette's routing (issue 7: the gateway's CPU per
    request); False, having done nothing, when `scope` is not `POST /predictions/...`.

    Same behaviour as the routes above: `proxy_prediction`, the same error handlers, and
    `scope["route"]` set to the matching route for the metrics' route label.
    """
    if scope["method"] != "POST":
        return False
    match = _PREDICTION_PATH.fullmatch(scope["path"])
    if match is None:
        return False
    model, version = match.groups()
    if version is None:
        scope["path_params"] = {"model": model}
        scope["route"] = _MODEL_ROUTE
    else:
        scope["path_params"] = {"model": model, "version": version}
        scope["route"] = _VERSION_ROUTE
    request = Request(scope, receive)
    response: Response
    try:
        response = await proxy_prediction(request)
    except GatewayError as error:
        response = await handle_gateway_error(request, error)
    except ClientDisconnect as gone:
        response = await handle_client_disconnect(request, gone)
    await response(scope, receive, send)
    return True
