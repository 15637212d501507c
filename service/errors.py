"""Every error the gateway makes or maps, and the one function that renders them.

Each class carries its HTTP status; its name is the `type` a client sees in the one error
format, TorchServe's own shape: `{"code": int, "type": str, "message": str}`.

GatewayError (500)
├── RequestError: the client's request is refused before TorchServe is asked
│   ├── InvalidRequest (400): bad model name, version, archive url or parameter
│   ├── Unauthorized (401): no inference key, or a wrong one
│   ├── Forbidden (403): a key that does not open this route
│   │   └── ManagementDisabled (403): no GATEWAY_MANAGEMENT_KEYS configured
│   ├── RouteNotFound (404): no such endpoint on the gateway
│   ├── MethodNotAllowed (405)
│   ├── RequestTimeout (408): body not complete within GATEWAY_BODY_TIMEOUT_S
│   └── PayloadTooLarge (413): body over GATEWAY_MAX_BODY_BYTES
├── Overloaded (503, Retry-After): GATEWAY_MAX_IN_FLIGHT requests already in flight
└── UpstreamError: TorchServe failed to answer, or answered with an error
    ├── UpstreamUnavailable (503, Retry-After): refused, reset or closed connection
    │   └── UpstreamUnreachable: no connection made (never written: another backend may retry)
    ├── BackendsDisagree (502): a management call failed on some backends only
    ├── UpstreamTimeout (504): no answer within GATEWAY_TIMEOUT_S
    ├── UpstreamProtocolError (502): an answer that is not HTTP
    └── UpstreamRejected: TorchServe's error answers, mapped by `service.upstream_errors`
        ├── InvalidModelInput (400): the handler refused this input
        ├── ModelNotFound (404): no such model or version
        ├── Conflict (409)
        ├── ModelError (500): the handler raised on this request
        ├── WorkerDied (500 or 507): the worker process died during this request
        ├── ModelLoadFailed (500): registering or scaling could not start workers
        ├── ModelOutOfMemory (507): out of resources running the model
        ├── ModelBusy (503, Retry-After): no free worker or the job queue is full
        ├── ModelTimeout (504): TorchServe's own response timeout
        └── UpstreamFailure (any other status TorchServe used)
"""

from __future__ import annotations

import json
from typing import ClassVar

from pydantic import BaseModel

JSON_CONTENT_TYPE = b"application/json"


class ErrorBody(BaseModel):
    """The one error format (the OpenAPI schema of every error response)."""

    code: int
    type: str
    message: str


class GatewayError(Exception):
    """Base of every error the gateway renders; `status` is the HTTP status sent."""

    status: int = 500
    default_message: ClassVar[str] = "The gateway failed to handle this request."
    # Seconds for a Retry-After header; None sends none.
    retry_after: ClassVar[int | None] = None

    def __init__(self, message: str | None = None, *, status: int | None = None) -> None:
        self.message = message or self.default_message
        if status is not None:
            self.status = status
        super().__init__(self.message)

    @property
    def type_name(self) -> str:
        """The `type` field: the class name, a stable public identifier."""
        return type(self).__name__

    def body(self) -> bytes:
        """The JSON body `{"code", "type", "message"}`."""
        return json.dumps(
            {"code": self.status, "type": self.type_name, "message": self.message}
        ).encode()

    def headers(self) -> list[tuple[bytes, bytes]]:
        """Response headers beyond content type and length."""
        if self.retry_after is None:
            return []
        return [(b"retry-after", str(self.retry_after).encode())]


class RequestError(GatewayError):
    status = 400
    default_message = "The request is invalid."


class InvalidRequest(RequestError):
    status = 400


class Unauthorized(RequestError):
    status = 401
    default_message = "A valid key is required: send 'Authorization: Bearer <key>'."

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"www-authenticate", b"Bearer")]


class Forbidden(RequestError):
    status = 403
    default_message = "This key does not give access to this route."


class ManagementDisabled(Forbidden):
    default_message = (
        "The management API is off. Turn it on by setting GATEWAY_MANAGEMENT_KEYS "
        "(comma-separated keys) and send one as 'Authorization: Bearer <key>'."
    )


class RouteNotFound(RequestError):
    status = 404
    default_message = "No such endpoint."


class MethodNotAllowed(RequestError):
    status = 405
    default_message = "Method not allowed on this endpoint."


class RequestTimeout(RequestError):
    """Sent by the gateway's HTTP protocol (`service.http_protocol`), which closes the
    connection: the rest of the body is not waited for."""

    status = 408
    default_message = "The request did not arrive in time."


class PayloadTooLarge(RequestError):
    status = 413

    def headers(self) -> list[tuple[bytes, bytes]]:
        # The rest of the body is never read: the connection cannot be reused.
        return [(b"connection", b"close")]


class UnsupportedMediaType(RequestError):
    status = 415


class Overloaded(GatewayError):
    status = 503
    retry_after = 1
    default_message = "The gateway has too many requests in flight; retry shortly."


class UpstreamError(GatewayError):
    status = 502
    default_message = "TorchServe failed to answer."


class UpstreamUnavailable(UpstreamError):
    status = 503
    retry_after = 1
    default_message = "TorchServe is not reachable; retry shortly."


class UpstreamUnreachable(UpstreamUnavailable):
    """No connection could be made: the request was never written, so another backend may
    take it (`service.backend_pool`). Clients see it as `UpstreamUnavailable`."""

    @property
    def type_name(self) -> str:
        return "UpstreamUnavailable"


class BackendsDisagree(UpstreamError):
    """A management call fanned out to every backend succeeded on some and failed on others
    (or could not reach them); the message names each."""

    status = 502
    default_message = "The call succeeded on some backends and failed on others."


class UpstreamTimeout(UpstreamError):
    status = 504
    default_message = "TorchServe did not answer in time."


class UpstreamProtocolError(UpstreamError):
    status = 502
    default_message = "TorchServe's answer was not valid HTTP."


class UpstreamRejected(UpstreamError):
    """TorchServe answered with an error status; the subclass says what it means."""


class InvalidModelInput(UpstreamRejected):
    status = 400
    default_message = "The model refused this input."


class ModelNotFound(UpstreamRejected):
    status = 404
    default_message = "No such model or version."


class Conflict(UpstreamRejected):
    status = 409


class ModelError(UpstreamRejected):
    status = 500
    default_message = "The model failed on this request."


class WorkerDied(UpstreamRejected):
    status = 500
    default_message = "The model's worker process died while handling this request; retry."


class ModelLoadFailed(UpstreamRejected):
    status = 500
    default_message = "The model could not be loaded: its workers failed to start."


class ModelOutOfMemory(UpstreamRejected):
    status = 507
    default_message = "The model ran out of memory or resources on this request."


class ModelBusy(UpstreamRejected):
    status = 503
    retry_after = 1
    default_message = "The model has no free worker or its queue is full; retry shortly."


class ModelTimeout(UpstreamRejected):
    status = 504
    default_message = "The model did not answer within TorchServe's response timeout."


class UpstreamFailure(UpstreamRejected):
    default_message = "TorchServe could not handle this request."


# Every status a route may answer with an error, for the OpenAPI `responses` of each route.
def error_responses(*statuses: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI `responses` entries for `statuses`, each with the `ErrorBody` schema."""
    return {
        status: {"model": ErrorBody, "description": "Error (the gateway's one error format)"}
        for status in statuses
    }
