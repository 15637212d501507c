"""What TorchServe's error answers mean, as `service.errors` exceptions.

TorchServe 0.12 answers errors as `{"code", "type", "message"}` where `type` is a Java class
name, and some of its statuses mislead (read from the frontend's `RestJob.sendError`,
`WorkerThread`, `ApiUtils` and the Python worker's `ts/service.py`):

| TorchServe says                              | it means                  | gateway answers      |
|----------------------------------------------|---------------------------|----------------------|
| 503 "Prediction failed" (or another worker  | the handler raised or     | 500 ModelError       |
|   503 on a prediction: "Invalid ... output") | answered wrongly          |                      |
| 500 "Worker died."                           | worker process died       | 500 WorkerDied       |
| 507 "Worker died." (exit 137: SIGKILL, OOM?) | worker killed             | 507 WorkerDied       |
| 507 (any other)                              | out of memory/resources   | 507 ModelOutOfMemory |
| 503 "... has no worker to serve ..."         | no worker / queue full    | 503 ModelBusy        |
| 500 "Failed to start workers ..."            | model failed to load      | 500 ModelLoadFailed  |
| 400 from a prediction                        | handler refused the input | 400 InvalidModelInput|
| 400 from management                          | bad parameters            | 400 InvalidRequest   |
| 500 from a prediction (any other)            | the handler failed        | 500 ModelError       |
| 404                                          | unknown model or version  | 404 ModelNotFound    |
| 408                                          | TorchServe timed out      | 504 ModelTimeout     |
| 409                                          | conflict                  | 409 Conflict         |
| anything else >= 400                         | as said                   | same, UpstreamFailure|

A 4xx whose body is not TorchServe's error JSON is the handler's own answer (it set the
status itself): it passes through unchanged. A 5xx body that is not TorchServe's JSON may
hold anything (a traceback), so it is replaced. Messages are sanitised (`sanitise`).
"""

from __future__ import annotations

import json
import re
from enum import Enum

from service.errors import (
    Conflict,
    GatewayError,
    InvalidModelInput,
    InvalidRequest,
    ModelBusy,
    ModelError,
    ModelLoadFailed,
    ModelNotFound,
    ModelOutOfMemory,
    ModelTimeout,
    UpstreamFailure,
    WorkerDied,
)

MAX_MESSAGE_CHARS = 300


class Api(Enum):
    """Which TorchServe API an answer came from: the same status means different things."""

    INFERENCE = "inference"
    MANAGEMENT = "management"


_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|\n\s*(?:at |File \")|\n")
# Fully qualified Java/Python names (org.pytorch.serve.X, java.lang.Y, ts.service.Z).
_QUALIFIED_NAME = re.compile(r"\b(?:[a-z_][a-z0-9_]*\.){2,}[A-Za-z_$][\w$]*\b")
# Simple class names of exceptions (ModelNotFoundException, OutOfMemoryError).
_EXCEPTION_NAME = re.compile(r"\b[A-Z]\w*(?:Exception|Error)\b:?\s*")
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://\S+")
# Absolute or relative paths with at least one separator (Unix, Windows, file names in dirs).
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][\w.\-~]+)+[\\/]?|\b[\w.\-]+(?:[\\/][\w.\-]+)+")
# A media type (`application/x-npy`, `image/png`), not a path: a registered top-level type
# (RFC 6838), one slash, a subtype with no dot outside the vnd./prs./x. trees (`cat.png`,
# `weights.pt` are file names). A path has a leading separator or more than two parts.
_MEDIA_TYPE = re.compile(
    r"(?:application|audio|font|image|message|model|multipart|text|video)/"
    r"(?:(?:vnd|prs|x)\.[\w.+\-]+|[A-Za-z0-9][\w+\-]*)"
)
_WORKER_DIED = re.compile(r"\bworker\b.*\bdied\b", re.IGNORECASE | re.DOTALL)
_NO_WORKER = re.compile(r"has no worker|queue (?:is )?full", re.IGNORECASE)


def sanitise(message: str) -> str:
    """`message` without tracebacks, class names, URLs or file paths, on one short line."""
    message = _TRACEBACK.split(message, maxsplit=1)[0]
    message = _URL.sub("<url>", message)
    message = _QUALIFIED_NAME.sub("", message)
    message = _EXCEPTION_NAME.sub("", message)
    message = _PATH.sub(_hide_path, message)
    message = " ".join(message.split())
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 3] + "..."
    return message


def _hide_path(match: re.Match[str]) -> str:
    """``<path>`` for a file path; a media type such as ``application/x-npy`` stays."""
    text = match.group(0)
    return text if _MEDIA_TYPE.fullmatch(text) else "<path>"


def parse_error_body(body: bytes) -> tuple[int, str] | None:
    """`(code, message)` if `body` is TorchServe's error JSON, else None."""
    if not body.lstrip().startswith(b"{"):
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if (
        isinstance(data, dict)
        and isinstance(data.get("code"), int)
        and isinstance(data.get("type"), str)
        and isinstance(data.get("message"), str)
    ):
        return data["code"], data["message"]
    return None


def map_error_response(status: int, body: bytes, api: Api) -> GatewayError | None:
    """The exception that TorchServe's error answer `(status, body)` means, or None.

    None means "pass the answer through unchanged": a success, or a 4xx that is the
    handler's own answer rather than TorchServe's error JSON.
    """
    if status < 400:
        return None
    parsed = parse_error_body(body)
    if parsed is None:
        if status < 500:
            return None
        return UpstreamFailure(status=status)
    message = sanitise(parsed[1])
    return _map_torchserve_error(status, parsed[1], message, api)


def _map_torchserve_error(status: int, raw: str, message: str, api: Api) -> GatewayError:
    if status == 404:
        return ModelNotFound(message or None)
    if status == 400:
        if api is Api.INFERENCE:
            return InvalidModelInput(message or None)
        return InvalidRequest(message or "TorchServe refused the request's parameters.")
    if _WORKER_DIED.search(raw):
        if status == 507:
            return WorkerDied(
                "The model's worker process was killed while handling this request "
                "(possibly out of memory); retry.",
                status=507,
            )
        return WorkerDied()
    if status == 507:
        return ModelOutOfMemory()
    if status == 503 and _NO_WORKER.search(raw):
        return ModelBusy()
    if status == 503 and api is Api.INFERENCE:
        # "Prediction failed" (the handler raised), "Invalid model predict output"...:
        # the worker's 503s all mean the model failed on this request, not unavailability.
        return ModelError()
    if status == 500 and raw.startswith("Failed to start workers"):
        return ModelLoadFailed(f"{ModelLoadFailed.default_message} ({message})")
    if status == 500 and api is Api.INFERENCE:
        return ModelError(message or None)
    if status == 408:
        return ModelTimeout(message or None)
    if status == 409:
        return Conflict(message or None)
    return UpstreamFailure(message or None, status=status)
