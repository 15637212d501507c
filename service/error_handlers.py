"""The one place errors become responses: `service.errors` exceptions, and FastAPI's and
Starlette's own (unknown route, wrong method, parameter validation) mapped onto them."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from service.errors import (
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    RequestError,
    RouteNotFound,
    UpstreamError,
)
from service.proxy import gateway_state

logger = logging.getLogger(__name__)


def render(error: GatewayError) -> Response:
    """`error` in the one error format, with its extra headers (Retry-After, ...)."""
    response = Response(error.body(), status_code=error.status, media_type="application/json")
    response.raw_headers.extend(error.headers())
    return response


async def handle_gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    if isinstance(exc, UpstreamError):
        gateway_state(request).metrics.upstream_errors.labels(exc.type_name).inc()
        logger.warning(
            "%s %s: %s (%d) (request id %s)",
            request.method,
            request.url.path,
            exc.type_name,
            exc.status,
            request.scope.get("gateway.request_id", b"").decode(),
        )
    return render(exc)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error: GatewayError
    if exc.status_code == 404:
        error = RouteNotFound()
    elif exc.status_code == 405:
        error = MethodNotAllowed()
    else:
        error = RequestError(str(exc.detail)[:200], status=exc.status_code)
    response = render(error)
    if exc.headers:
        response.headers.update(exc.headers)
    if exc.status_code == 405:
        # Starlette names only the first route matching the path; one path has several.
        response.headers["allow"] = ", ".join(_allowed_methods(request))
    return response


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, APIRoute) and route.path_regex.match(request.url.path):
            methods |= route.methods or set()
    return sorted(methods)


async def handle_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    # Name the offending parameters and the rule, never echo the (client's) input.
    problems = [
        f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', 'invalid')}"
        for error in exc.errors()[:5]
    ]
    return render(InvalidRequest(("Invalid parameters: " + "; ".join(problems))[:300]))


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    # Starlette's ServerErrorMiddleware sends this, then re-raises `exc` to the gateway's
    # middleware, which logs it with the request id.
    return render(GatewayError())


async def handle_client_disconnect(request: Request, exc: Exception) -> Response:
    # Nobody is left to read it; 499 (nginx's "client closed request") for the metrics.
    return Response(status_code=499)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers above on `app`."""
    app.add_exception_handler(GatewayError, handle_gateway_error)
    app.add_exception_handler(HTTPException, handle_http_exception)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(ClientDisconnect, handle_client_disconnect)
    app.add_exception_handler(Exception, handle_unexpected)
