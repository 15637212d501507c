"""TorchServe's management API on the gateway's port, behind a management key.

Every parameter is typed and bounded here, and the query sent upstream is rebuilt from the
validated values only: an unknown parameter is a 400, never forwarded. `POST /models`
registers only an archive that exists in MODEL_STORE, named by its file name.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request

from service.archive_config import ArchiveUnreadable, batching_query, model_identity
from service.errors import InvalidRequest, ModelLoadFailed, error_responses
from service.headers import REQUEST_ID_HEADER
from service.proxy import ProxiedResponse, forward, gateway_state, request_id
from service.registration_guard import unregister, watch_new_model
from service.routes.deps import ManagementAccess
from service.routes.inference import ModelName, Version
from service.upstream import TorchServeClient
from service.upstream_errors import Api
from service.validation import check_model_name, check_version, resolve_archive


async def refuse_repeated_parameters(request: Request) -> None:
    """400 naming every query parameter given more than once: FastAPI would take the last
    value of `url=a&url=b` silently, and a request that says two things is refused, not
    guessed at."""
    names = [name for name, _ in request.query_params.multi_items()]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidRequest(
            f"Repeated query parameter(s): {', '.join(repeated)[:200]}; give each once."
        )


# The key is checked first: without one, nothing about the request is answered.
router = APIRouter(
    tags=["management"],
    dependencies=[ManagementAccess, Depends(refuse_repeated_parameters)],
)

Workers = Annotated[int | None, Query(ge=0, le=256)]
Synchronous = Annotated[bool | None, Query(description="Wait for the workers to start.")]

_JSON_ANSWER = {
    "description": "TorchServe's answer, as it sent it.",
    "content": {"application/json": {}},
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _JSON_ANSWER,
    **error_responses(400, 401, 403, 404, 409, 500, 502, 503, 504, 507),
}
_ASYNC_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_RESPONSES,
    202: {"description": "Accepted: workers are starting (asynchronous call)."},
    206: {"description": "Partial: workers are still scaling."},
}


def _query(request: Request, values: Mapping[str, object]) -> bytes:
    """The upstream query string from validated `values` (None dropped); 400 on unknowns."""
    unknown = set(request.query_params) - set(values)
    if unknown:
        raise InvalidRequest(f"Unknown query parameter(s): {', '.join(sorted(unknown))[:200]}.")
    pairs = [
        (name, str(value).lower() if isinstance(value, bool) else str(value))
        for name, value in values.items()
        if value is not None
    ]
    return urlencode(pairs).encode()


async def _send(
    request: Request, method: str, path: str, model: str | None, query: bytes = b""
) -> ProxiedResponse:
    headers = [(b"accept", b"application/json"), (REQUEST_ID_HEADER, request_id(request))]
    try:
        return await forward(
            request, Api.MANAGEMENT, method, path, model=model, query=query, headers=headers
        )
    finally:
        if method != "GET":
            _forget_handlers(request)


def _forget_handlers(request: Request) -> None:
    # A model or default version may have changed handler: batch only once its answers
    # say so again.
    batcher = gateway_state(request).batcher
    if batcher is not None:
        batcher.forget()


def _model_path(model: str, version: str | None = None) -> str:
    path = f"/models/{check_model_name(model)}"
    if version is not None:
        path = f"{path}/{check_version(version)}"
    return path


@router.get("/models", responses=_RESPONSES)
async def list_models(
    request: Request,
    limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
    next_page_token: Annotated[int | None, Query(ge=0)] = None,
) -> ProxiedResponse:
    """List the registered models (paginated like TorchServe)."""
    query = _query(request, {"limit": limit, "next_page_token": next_page_token})
    return await _send(request, "GET", "/models", None, query)


@router.post("/models", responses=_ASYNC_RESPONSES)
async def register_model(
    request: Request,
    url: Annotated[str, Query(description="File name of an archive in the model store.")],
    initial_workers: Workers = None,
    synchronous: Synchronous = None,
    batch_size: Annotated[int | None, Query(ge=1, le=1024)] = None,
    max_batch_delay: Annotated[int | None, Query(ge=0, le=60_000)] = None,
) -> ProxiedResponse:
    """Register an archive from the model store, e.g. `url=my_model.mar`.

    Without `batch_size` and `max_batch_delay`, both come from the archive's config: TorchServe
    alone would read its `maxBatchDelay: 0` as 100 ms (`service.archive_config`). A model
    whose workers fail to start is unregistered again and the answer is 500
    `ModelLoadFailed` saying so (`service.registration_guard`; asynchronous registrations
    are watched for up to GATEWAY_LOAD_GRACE_S)."""
    settings = gateway_state(request).settings
    store = settings.model_store
    archive = resolve_archive(url, store)
    if batch_size is None and max_batch_delay is None:
        with contextlib.suppress(ArchiveUnreadable):  # TorchServe then says what is wrong
            batching = await asyncio.to_thread(batching_query, store / archive)
            batch_size = int(batching["batch_size"]) if "batch_size" in batching else None
            if "max_batch_delay" in batching:
                max_batch_delay = int(batching["max_batch_delay"])
    values = {
        "url": archive,
        "initial_workers": initial_workers,
        "synchronous": synchronous,
        "batch_size": batch_size,
        "max_batch_delay": max_batch_delay,
    }
    query = _query(request, values)
    identity = await asyncio.to_thread(_identity, store / archive)
    try:
        answer = await _send(request, "POST", "/models", None, query)
    except ModelLoadFailed as error:
        if identity is None:
            raise
        raise await _undo(request, identity, error.message) from None
    if answer.status_code == 202 and identity is not None and initial_workers != 0:
        failed = await watch_new_model(
            _upstream(request),
            *identity,
            grace_s=settings.gateway_load_grace_s,
            timeout=5.0,
            log_dir=settings.gateway_torchserve_log_dir,
        )
        if failed is not None:
            _forget_handlers(request)
            raise failed
    return answer


def _identity(archive: Path) -> tuple[str, str] | None:
    """The archive's model name and version, if readable and valid (else no guard)."""
    try:
        name, version = model_identity(archive)
        return check_model_name(name), check_version(version)
    except (ArchiveUnreadable, InvalidRequest):
        return None


def _upstream(request: Request) -> TorchServeClient:
    upstream = gateway_state(request).upstream
    assert upstream is not None, "the lifespan opens the upstream client"
    return upstream


async def _undo(request: Request, identity: tuple[str, str], cause: str) -> ModelLoadFailed:
    log_dir = gateway_state(request).settings.gateway_torchserve_log_dir
    error = await unregister(_upstream(request), *identity, cause, timeout=5.0, log_dir=log_dir)
    _forget_handlers(request)
    return error


@router.get("/models/{model}", responses=_RESPONSES)
async def describe_model(request: Request, model: ModelName) -> ProxiedResponse:
    """Describe the model's default version, workers included."""
    return await _send(request, "GET", _model_path(model), model, _query(request, {}))


@router.get("/models/{model}/{version}", responses=_RESPONSES)
async def describe_version(request: Request, model: ModelName, version: Version) -> ProxiedResponse:
    """Describe one version of the model (`all`: every version)."""
    return await _send(request, "GET", _model_path(model, version), model, _query(request, {}))


@router.put("/models/{model}", responses=_ASYNC_RESPONSES)
async def scale_model(
    request: Request,
    model: ModelName,
    min_worker: Workers = None,
    max_worker: Workers = None,
    synchronous: Synchronous = None,
) -> ProxiedResponse:
    """Scale the default version's workers."""
    values = {"min_worker": min_worker, "max_worker": max_worker, "synchronous": synchronous}
    return await _send(request, "PUT", _model_path(model), model, _query(request, values))


@router.put("/models/{model}/{version}", responses=_ASYNC_RESPONSES)
async def scale_version(
    request: Request,
    model: ModelName,
    version: Version,
    min_worker: Workers = None,
    max_worker: Workers = None,
    synchronous: Synchronous = None,
) -> ProxiedResponse:
    """Scale one version's workers."""
    values = {"min_worker": min_worker, "max_worker": max_worker, "synchronous": synchronous}
    path = _model_path(model, version)
    return await _send(request, "PUT", path, model, _query(request, values))


@router.put("/models/{model}/{version}/set-default", responses=_RESPONSES)
async def set_default_version(
    request: Request, model: ModelName, version: Version
) -> ProxiedResponse:
    """Make `version` the one `/predictions/{model}` runs."""
    path = f"{_model_path(model, version)}/set-default"
    return await _send(request, "PUT", path, model, _query(request, {}))


@router.delete("/models/{model}/{version}", responses=_ASYNC_RESPONSES)
async def unregister_version(
    request: Request, model: ModelName, version: Version
) -> ProxiedResponse:
    """Unregister one version of the model."""
    return await _send(request, "DELETE", _model_path(model, version), model, _query(request, {}))
