"""Predictions for any protocol: N instances of one model version, N answers, in order.

Protocol adapters (`service.protocols`) turn their requests into instances (a content type
and a body each, what `POST /predictions` would carry) and call `predict_instances`; the
instances go through the gateway's batching (`service.batching`), together where they fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from starlette.requests import Request

from service.errors import GatewayError, InvalidModelInput, ModelNotFound, UpstreamRejected
from service.headers import REQUEST_ID_HEADER
from service.middleware import MODEL_KEY
from service.proxy import gateway_state, request_id
from service.upstream_errors import sanitise


@dataclass(frozen=True, slots=True)
class Instance:
    """One prediction: what `POST /predictions/{model}` would send as its body."""

    content_type: bytes
    body: bytes


async def predict_instances(
    request: Request, model: str, version: str | None, instances: Sequence[Instance]
) -> list[bytes]:
    """The model's answer bodies to `instances`, in order.

    `model` and `version` must be validated. When any instance fails, raises the error of the
    first that failed (its status; with several instances, the message says which), as the
    protocols have no partial answers. Raises what `TorchServeClient.send` raises.
    """
    state = gateway_state(request)
    assert state.batcher is not None, "the lifespan opens the batcher"
    path = f"/predictions/{model}" if version is None else f"/predictions/{model}/{version}"
    rid = request_id(request)
    requests = [
        ([(b"content-type", i.content_type), (REQUEST_ID_HEADER, rid)], i.body) for i in instances
    ]
    answers = await state.batcher.predict_many(model, path, requests)
    bodies: list[bytes] = []
    known = False
    failure: GatewayError | None = None
    for index, answer in enumerate(answers):
        if isinstance(answer, GatewayError):
            known = known or (
                isinstance(answer, UpstreamRejected) and not isinstance(answer, ModelNotFound)
            )
            failure = failure or _which(answer, index, len(answers))
            continue
        known = known or answer.status != 404
        if answer.status >= 300:  # a handler's own 4xx, passed through by the upstream client
            text = sanitise(answer.body.decode("utf-8", "replace")) or None
            failure = failure or _which(
                InvalidModelInput(text, status=answer.status), index, len(answers)
            )
            continue
        bodies.append(answer.body)
    if known:
        request.scope[MODEL_KEY] = state.metrics.model_label(model)
    if failure is not None:
        raise failure
    return bodies


def _which(error: GatewayError, index: int, count: int) -> GatewayError:
    """`error`, naming the instance when there are several (a copy: one error object may be
    shared by every prediction of a failed batch, other clients' included)."""
    if count == 1:
        return error
    return type(error)(f"instance {index} of {count}: {error.message}", status=error.status)
