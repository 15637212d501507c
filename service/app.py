"""The gateway app: `create_app(settings)` builds it; nothing happens at import time.

Launched by the launcher as
`python -m uvicorn --factory service.app:create_app --host H --port P --loop uvloop
--http httptools --no-access-log`. The lifespan opens the one TorchServe client
(`service.upstream.TorchServeClient`) and closes it.

Every HTTP request enters through `GatewayMiddleware` (request id, in-flight bound, metrics,
the prediction fast path), in front of FastAPI's own stack: a prediction never pays for
FastAPI's per-request telemetry check and its three wrapping middlewares (issue 7: a few %
of the gateway's CPU per request in py-spy's samples).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from service.auth import KeyRing
from service.backend_pool import BackendPool, PooledBatcher
from service.batching import PredictionBatcher
from service.error_handlers import install_error_handlers
from service.metrics import GatewayMetrics
from service.middleware import FastPath, GatewayMiddleware
from service.model_catalog import ModelCatalog
from service.protocols.oip import routes as oip
from service.protocols.oip.errors import error_body_for_path, protocol_errors
from service.proxy import STATE_KEY, GatewayState
from service.routes import docs, health, inference, management, ping
from service.settings import GatewaySettings
from service.upstream import TorchServeClient

logger = logging.getLogger(__name__)

DESCRIPTION = """\
The only front door to TorchServe: its inference and management APIs, and the Open Inference
Protocol (KServe v2, `/v2/...`), on one port, behind bearer keys, with request limits, one
error format `{"code", "type", "message"}` (`{"error"}` on `/v2`), truthful health checks and
Prometheus metrics.
"""


def create_app(
    settings: GatewaySettings | None = None,
    *,
    upstream_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build the gateway for `settings` (default: read from the environment now).

    `upstream_transport` replaces the transport to TorchServe (tests: a backend that hangs
    or answers what real TorchServe cannot be made to). Raises `pydantic.ValidationError`
    for invalid settings, before anything listens.
    """
    settings = settings or GatewaySettings()
    state = GatewayState(
        settings=settings,
        keys=KeyRing.from_strings(
            settings.gateway_inference_keys, settings.gateway_management_keys
        ),
        metrics=GatewayMetrics(),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.pooled:  # several TorchServes (service.backend_pool)
            pool = BackendPool(settings, state.metrics)
            state.upstream, state.batcher = pool, PooledBatcher(pool)
            pool.start()
        else:
            state.upstream = TorchServeClient(settings, upstream_transport)
            state.batcher = PredictionBatcher(
                state.upstream,
                state.metrics,
                max_items=settings.gateway_batch_max_items,
                max_bytes=settings.gateway_max_body_bytes,
                slots=settings.gateway_batch_in_flight,
                min_items=settings.gateway_batch_min_items,
                timeout_s=settings.gateway_timeout_s,
            )
        logger.info(
            "Gateway up: TorchServe at %s (inference), %s (management); transport %s; "
            "management API %s",
            settings.inference_url,
            settings.management_url,
            settings.gateway_upstream_transport.value,
            "on" if settings.gateway_management_keys else "off",
        )
        try:
            yield
        finally:
            await state.upstream.aclose()
            state.upstream = state.batcher = None

    app = GatewayApp(
        title="TorchServe gateway",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by service.routes.docs, without a CDN
        redoc_url=None,
    )
    app.state.gateway = state
    app.include_router(inference.router)
    app.include_router(management.router)
    app.include_router(health.router)
    app.include_router(ping.router)
    v2 = oip.build_routes(ModelCatalog(state), app.version)
    app.include_router(v2.router)
    docs.add_docs(app)
    install_error_handlers(app)
    app.front = GatewayMiddleware(
        protocol_errors(app.fastapi),
        metrics=state.metrics,
        max_in_flight=settings.gateway_max_in_flight,
        fast_path=first_of(inference.serve_prediction, v2.serve_infer),
        error_body=error_body_for_path,
    )
    return app


def first_of(*paths: FastPath) -> FastPath:
    """One fast path trying each of `paths` in turn (each does nothing unless it serves)."""

    async def serve(scope: Scope, receive: Receive, send: Send) -> bool:
        for path in paths:
            if await path(scope, receive, send):
                return True
        return False

    return serve


class GatewayApp(FastAPI):
    """FastAPI with `front` (the gateway's middleware, set by `create_app`) before all of
    FastAPI for HTTP."""

    front: GatewayMiddleware

    async def fastapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI's own handling, behind `front`."""
        await super().__call__(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self  # what Starlette sets, for a request the fast path serves
        scope[STATE_KEY] = self.state.gateway
        await self.front(scope, receive, send)
