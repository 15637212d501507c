"""`/healthz` (the process), `/readyz` (the whole stack) and `/metrics`; no key needed."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.backend_pool import BackendPool
from service.proxy import gateway_state
from service.readiness import check_readiness

router = APIRouter(tags=["health"])

_READINESS_DOC: dict[int | str, dict[str, Any]] = {
    200: {"description": "Ready: TorchServe answers and every model has its workers."},
    503: {"description": "Not ready; the body says which part is not (same shape as 200)."},
}


@router.get("/healthz", responses={200: {"description": "The gateway process is up."}})
async def healthz() -> Response:
    """The gateway process alone: 200 while it can answer at all."""
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get("/readyz", responses=_READINESS_DOC)
async def readyz(request: Request) -> Response:
    """200 when TorchServe answers and every registered model version has at least its
    minimum workers READY; else 503. Per-model detail either way."""
    state = gateway_state(request)
    assert state.upstream is not None, "the lifespan opens the upstream client"
    if isinstance(state.upstream, BackendPool):  # several TorchServes: each one's view
        ready, body = await state.upstream.readiness(
            concurrency=state.settings.gateway_readiness_concurrency,
            timeout=state.settings.gateway_readiness_timeout_s,
        )
        return Response(
            json.dumps(body), status_code=200 if ready else 503, media_type="application/json"
        )
    readiness = await check_readiness(
        state.upstream,
        concurrency=state.settings.gateway_readiness_concurrency,
        timeout=state.settings.gateway_readiness_timeout_s,
    )
    return Response(
        json.dumps(readiness.as_json()),
        status_code=200 if readiness.ready else 503,
        media_type="application/json",
    )


@router.get(
    "/metrics",
    responses={
        200: {"description": "Prometheus text format.", "content": {CONTENT_TYPE_LATEST: {}}}
    },
)
async def metrics(request: Request) -> Response:
    """The gateway's own metrics (requests, latency, upstream errors, in flight)."""
    registry = gateway_state(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
