"""The protocol's endpoints: health, server and model metadata, model readiness, inference.

Thin: each checks the key and names, then asks the catalog (`service.model_catalog`) or the
prediction path (`service.prediction`), and encodes the answer. Every error on these routes,
raised by a dependency, FastAPI's parameter checks or the endpoint, is answered as
`{"error": "..."}` by `ProtocolRoute`; what the rest of FastAPI answers on `/v2/...` (an
unknown path, a wrong method) is reshaped by `service.protocols.oip.errors.protocol_errors`.
`POST .../infer` is served by `serve_infer` from the gateway's middleware, ahead of Starlette's
router (the routes describe it in OpenAPI and answer its other methods).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from service.archive_config import ArchiveUnreadable, handler_section
from service.body import read_body
from service.errors import (
    GatewayError,
    InvalidRequest,
)
from service.model_catalog import ModelCatalog, ModelVersion
from service.prediction import predict_instances
from service.protocols.oip import codec, instances
from service.protocols.oip.datamodels import (
    ErrorResponse,
    InferenceRequest,
    InferenceResponse,
    MetadataTensor,
    ModelMetadataResponse,
    ModelReadyResponse,
    ServerLiveResponse,
    ServerMetadataResponse,
    ServerReadyResponse,
)
from service.protocols.oip.errors import NoSignature, error_response
from service.protocols.oip.signatures import (
    ModelSignature,
    SignatureUnavailable,
    signature_from_handler,
)
from service.proxy import gateway_state
from service.readiness import check_readiness
from service.routes.deps import InferenceAccess, check_inference_key
from service.validation import (
    MODEL_NAME_PATTERN,
    VERSION_PATTERN,
    check_model_name,
    check_version,
)

logger = logging.getLogger(__name__)

_MAX_CACHED = 1024
SERVER_NAME = "torchserve-gateway-stack"
PLATFORM = "pytorch_torchserve"
EXTENSIONS = ["binary_tensor_data"]
BINARY = codec.BINARY_CONTENT_TYPE

ModelName = Annotated[
    str, Path(description="Model name.", json_schema_extra={"pattern": f"^{MODEL_NAME_PATTERN}$"})
]
Version = Annotated[
    str, Path(description="Model version.", json_schema_extra={"pattern": f"^{VERSION_PATTERN}$"})
]


class ProtocolRoute(APIRoute):
    """An APIRoute whose errors, whatever raised them, take the protocol's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            return await answer_guarded(request, handler)

        return guarded


async def answer_guarded(
    request: Request, handler: Callable[[Request], Coroutine[Any, Any, Response]]
) -> Response:
    """`handler(request)`, with every error it raises answered in the protocol's shape."""
    try:
        return await handler(request)
    except GatewayError as error:
        return error_response(request, error)
    except RequestValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in exc.errors()[:5]
        )
        return error_response(request, InvalidRequest(f"Invalid parameters: {problems}"[:300]))
    except HTTPException as exc:
        return error_response(request, GatewayError(str(exc.detail)[:200], status=exc.status_code))
    except ClientDisconnect:
        return Response(status_code=499)  # nobody is left to read it
    except Exception:
        logger.exception(
            "Unhandled error (request id %s)",
            request.scope.get("gateway.request_id", b"").decode(),
        )
        return error_response(request, GatewayError())


@dataclass(frozen=True)
class ProtocolRoutes:
    """The protocol's router, and `serve_infer`: its infer routes served straight from the
    gateway's middleware (`service.middleware.FastPath`), as predictions are."""

    router: APIRouter
    serve_infer: Callable[[Scope, Receive, Send], Awaitable[bool]]


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"model": ErrorResponse, "description": 'Error: `{"error": message}`'}
        for status in statuses
    }


_MODEL_ERRORS = _responses(400, 401, 404, 502, 503, 504)
_INFER_ERRORS = _responses(400, 401, 404, 413, 500, 502, 503, 504, 507)
_NOT_READY = {"model": ModelReadyResponse, "description": "Registered, not ready."}


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its `$defs` inlined (OpenAPI resolves refs at its root)."""
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(definitions[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


_INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "`$inference_request` as JSON; or, with the header Inference-Header-Content-Length, "
            "that many bytes of it followed by the inputs' binary data (Triton's extension)."
        ),
        "content": {
            "application/json": {"schema": _inline(InferenceRequest.model_json_schema())},
            BINARY: {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def build_routes(catalog: ModelCatalog, version: str) -> ProtocolRoutes:
    """The protocol's routes; `version` is the gateway's, for the server metadata."""
    router = APIRouter(tags=["open inference protocol (v2)"], route_class=ProtocolRoute)
    signatures = Signatures()

    @router.get("/v2/health/live", response_model=ServerLiveResponse)
    async def server_live() -> ServerLiveResponse:
        """The gateway process is up (as `/healthz`)."""
        return ServerLiveResponse(live=True)

    @router.get(
        "/v2/health/ready",
        response_model=ServerReadyResponse,
        responses={503: {"model": ServerReadyResponse, "description": "Not ready."}},
    )
    async def server_ready(request: Request) -> Response:
        """Ready as `/readyz` says: TorchServe answers and every model has its workers;
        503 with `{"ready": false}` otherwise."""
        state = gateway_state(request)
        assert state.upstream is not None, "the lifespan opens the upstream client"
        readiness = await check_readiness(
            state.upstream,
            concurrency=state.settings.gateway_readiness_concurrency,
            timeout=state.settings.gateway_readiness_timeout_s,
        )
        return _json({"ready": readiness.ready}, 200 if readiness.ready else 503)

    @router.get(
        "/v2",
        response_model=ServerMetadataResponse,
        responses=_responses(401),
        dependencies=[InferenceAccess],
    )
    async def server_metadata() -> ServerMetadataResponse:
        """The server's name, version and protocol extensions."""
        return ServerMetadataResponse(name=SERVER_NAME, version=version, extensions=EXTENSIONS)

    async def metadata(model: str, version: str | None) -> ModelMetadataResponse:
        found = await catalog.version(check_model_name(model), _version(version))
        signature = await signatures.of(found)
        return ModelMetadataResponse(
            name=model,
            versions=await catalog.versions(model),
            platform=PLATFORM,
            inputs=[MetadataTensor(**spec.metadata()) for spec in signature.inputs],
            outputs=[MetadataTensor(**spec.metadata()) for spec in signature.outputs],
        )

    @router.get(
        "/v2/models/{model}",
        response_model=ModelMetadataResponse,
        responses=_MODEL_ERRORS,
        dependencies=[InferenceAccess],
    )
    async def model_metadata(model: ModelName) -> ModelMetadataResponse:
        """The default version's inputs and outputs (from its archive), and every version."""
        return await metadata(model, None)

    @router.get(
        "/v2/models/{model}/versions/{version}",
        response_model=ModelMetadataResponse,
        responses=_MODEL_ERRORS,
        dependencies=[InferenceAccess],
    )
    async def model_version_metadata(model: ModelName, version: Version) -> ModelMetadataResponse:
        """One version's inputs and outputs (from its archive), and every version."""
        return await metadata(model, version)

    async def ready(model: str, version: str | None) -> Response:
        found = await catalog.version(check_model_name(model), _version(version), fresh=True)
        return _json({"name": model, "ready": found.ready}, 200 if found.ready else 503)

    @router.get(
        "/v2/models/{model}/ready",
        response_model=ModelReadyResponse,
        responses={**_MODEL_ERRORS, 503: _NOT_READY},
        dependencies=[InferenceAccess],
    )
    async def model_ready(model: ModelName) -> Response:
        """200 when the default version has its minimum workers READY, else 503."""
        return await ready(model, None)

    @router.get(
        "/v2/models/{model}/versions/{version}/ready",
        response_model=ModelReadyResponse,
        responses={**_MODEL_ERRORS, 503: _NOT_READY},
        dependencies=[InferenceAccess],
    )
    async def model_version_ready(model: ModelName, version: Version) -> Response:
        """200 when this version has its minimum workers READY, else 503."""
        return await ready(model, version)

    async def infer(request: Request, model: str, version: str | None) -> Response:
        check_model_name(model)
        version = _version(version)
        scope = request.scope
        limit = gateway_state(request).settings.gateway_max_body_bytes
        body = await read_body(scope, request.receive, limit)
        if request.headers.get("content-encoding", "identity").lower() != "identity":
            raise InvalidRequest("Compressed request bodies are not accepted.")
        decoded = codec.decode_request(body, request.headers.get(codec.HEADER_LENGTH))
        found = await catalog.version(model, version)
        signature = await signatures.of(found)
        parameters = decoded.request.parameters
        top_k = instances.top_k_parameter(signature, parameters)
        work = instances.to_instances(signature, decoded.inputs)
        answers = await predict_instances(request, model, version, work)
        outputs = instances.to_outputs(signature, answers, top_k)
        header: dict[str, Any] = {"model_name": model, "model_version": found.version}
        if decoded.request.id is not None:
            header["id"] = decoded.request.id
        encoded = codec.encode_response(header, outputs, decoded.request.outputs, parameters)
        response = Response(encoded.body, media_type=encoded.content_type)
        if encoded.header_length is not None:
            response.headers[codec.HEADER_LENGTH] = str(encoded.header_length)
        return response

    _infer_doc: dict[str, Any] = {
        "responses": {
            200: {
                "model": InferenceResponse,
                "description": (
                    "`$inference_response` as JSON; with binary outputs, that JSON (its length "
                    "in Inference-Header-Content-Length) followed by their bytes."
                ),
                "content": {BINARY: {"schema": {"type": "string", "format": "binary"}}},
            },
            **_INFER_ERRORS,
        },
        "openapi_extra": _INFER_BODY,
        "dependencies": [InferenceAccess],
    }

    @router.post("/v2/models/{model}/infer", **_infer_doc)
    async def model_infer(request: Request, model: ModelName) -> Response:
        """Run the default version on the request's instances (first dimension of each input)."""
        return await infer(request, model, None)

    @router.post("/v2/models/{model}/versions/{version}/infer", **_infer_doc)
    async def model_version_infer(request: Request, model: ModelName, version: Version) -> Response:
        """Run one version on the request's instances (first dimension of each input)."""
        return await infer(request, model, version)

    routes = {r.path: r for r in router.routes if isinstance(r, APIRoute)}
    default_route = routes["/v2/models/{model}/infer"]
    version_route = routes["/v2/models/{model}/versions/{version}/infer"]

    async def infer_request(request: Request) -> Response:
        check_inference_key(request)
        params = request.path_params
        return await infer(request, params["model"], params.get("version"))

    async def serve_infer(scope: Scope, receive: Receive, send: Send) -> bool:
        """Serve `POST /v2/models/{model}[/versions/{version}]/infer` without Starlette's
        router and FastAPI's stack (about two thirds of the gateway's CPU per v2 request
        otherwise); False, having done nothing, for any other request. Same behaviour as
        the routes above, `scope["route"]` set for the metrics' route label."""
        if scope["method"] != "POST":
            return False
        match = _INFER_PATH.fullmatch(scope["path"])
        if match is None:
            return False
        model, version = match.groups()
        if version is None:
            scope["path_params"] = {"model": model}
            scope["route"] = default_route
        else:
            scope["path_params"] = {"model": model, "version": version}
            scope["route"] = version_route
        request = Request(scope, receive)
        response = await answer_guarded(request, infer_request)
        await response(scope, receive, send)
        return True

    return ProtocolRoutes(router, serve_infer)


# Starlette's `{param}` matches one path segment, as this does.
_INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")


def _version(version: str | None) -> str | None:
    return None if version is None else check_version(version)


class Signatures:
    """Each archive's signature, kept `ttl_s` seconds: on the prediction path the archive's
    file is looked at (in a thread) at most once a second, not once a request."""

    def __init__(self, ttl_s: float = 1.0) -> None:
        self._ttl_s = ttl_s
        self._cache: dict[FilePath, tuple[float, ModelSignature]] = {}

    async def of(self, found: ModelVersion) -> ModelSignature:
        """`found`'s signature; `NoSignature` (404) when its archive describes none."""
        why = "its archive is not in the gateway's model store"
        if found.archive is not None:
            now = time.monotonic()
            cached = self._cache.get(found.archive)
            if cached is not None and cached[0] > now:
                return cached[1]
            try:
                section = await asyncio.to_thread(handler_section, found.archive)
                signature = signature_from_handler(section)
            except ArchiveUnreadable:
                why = "its archive is unreadable"
            except SignatureUnavailable as exc:
                why = str(exc)
            else:
                if len(self._cache) >= _MAX_CACHED:
                    self._cache.clear()
                self._cache[found.archive] = (now + self._ttl_s, signature)
                return signature
        raise NoSignature(
            f"Model {found.name!r} version {found.version!r} has no v2 metadata: {why} "
            f"(its predictions are served at /predictions/{found.name})."
        )


def _json(document: dict[str, Any], status: int) -> Response:
    return Response(
        json.dumps(document).encode(), status_code=status, media_type="application/json"
    )
