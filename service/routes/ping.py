"""`GET /ping`: TorchServe's health path on the gateway, with TorchServe's answer.

TorchServe's own clients and load balancers probe `/ping`; the gateway passes TorchServe's
answer through (`{"status": "Healthy"}`, 200, or its unhealthy answer and status), and
answers `{"status": "Unhealthy"}` with 500, as TorchServe does, when TorchServe cannot be
reached or fails. No key, like `/healthz`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.errors import UpstreamError
from service.proxy import gateway_state
from service.upstream_errors import Api

router = APIRouter(tags=["health"])

UNHEALTHY = b'{"status": "Unhealthy"}'


@router.get(
    "/ping",
    responses={
        200: {"description": 'TorchServe\'s answer: `{"status": "Healthy"}`.'},
        500: {"description": '`{"status": "Unhealthy"}`: TorchServe is unhealthy or unreachable.'},
    },
)
async def ping(request: Request) -> Response:
    """TorchServe's health as TorchServe's `/ping` answers it."""
    state = gateway_state(request)
    assert state.upstream is not None, "the lifespan opens the upstream client"
    try:
        answer = await state.upstream.send(
            Api.INFERENCE, "GET", "/ping", timeout=state.settings.gateway_readiness_timeout_s
        )
    except UpstreamError:
        return Response(UNHEALTHY, status_code=500, media_type="application/json")
    if answer.status != 200:
        return Response(UNHEALTHY, status_code=500, media_type="application/json")
    return Response(answer.body, media_type="application/json")
