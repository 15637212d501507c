"""TorchServe's error answers mapped to what they mean, with sanitised messages."""

import json

import pytest

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
from service.upstream_errors import Api, map_error_response, parse_error_body, sanitise


def ts_error(code: int, message: str, type_: str = "InternalServerException") -> bytes:
    return json.dumps({"code": code, "type": type_, "message": message}).encode()


@pytest.mark.parametrize(
    ("status", "message", "api", "expected", "expected_status"),
    [
        (503, "Prediction failed", Api.INFERENCE, ModelError, 500),
        (503, "Invalid model predict output", Api.INFERENCE, ModelError, 500),
        (500, "Worker died.", Api.INFERENCE, WorkerDied, 500),
        (507, "Worker died.", Api.INFERENCE, WorkerDied, 507),
        (507, "Out of resources", Api.INFERENCE, ModelOutOfMemory, 507),
        (
            503,
            'Model "m" has no worker to serve inference request. Please use scale workers API',
            Api.INFERENCE,
            ModelBusy,
            503,
        ),
        (
            500,
            "Failed to start workers for model m version: 1.0",
            Api.MANAGEMENT,
            ModelLoadFailed,
            500,
        ),
        (400, "bad input", Api.INFERENCE, InvalidModelInput, 400),
        (400, "max_worker cannot be less than min_worker.", Api.MANAGEMENT, InvalidRequest, 400),
        (404, "Model not found: m", Api.INFERENCE, ModelNotFound, 404),
        (404, "Model version: 9 does not exist for model: m", Api.MANAGEMENT, ModelNotFound, 404),
        (408, "Timed out while cleaning resources: m", Api.MANAGEMENT, ModelTimeout, 504),
        (409, "Model version 1.0 is already registered", Api.MANAGEMENT, Conflict, 409),
        (500, "handler said no", Api.INFERENCE, ModelError, 500),
        (500, "Model file already exists echo.mar", Api.MANAGEMENT, UpstreamFailure, 500),
        (503, "Invalid HTTP method received", Api.MANAGEMENT, UpstreamFailure, 503),
    ],
)
def test_mapping_table(
    status: int, message: str, api: Api, expected: type[GatewayError], expected_status: int
) -> None:
    error = map_error_response(status, ts_error(status, message), api)
    assert type(error) is expected
    assert error is not None and error.status == expected_status
    body = json.loads(error.body())
    assert body == {"code": expected_status, "type": expected.__name__, "message": error.message}


def test_successes_pass_through() -> None:
    assert map_error_response(200, b'{"code": 1}', Api.INFERENCE) is None
    assert map_error_response(202, b"", Api.MANAGEMENT) is None


def test_a_handlers_own_4xx_passes_through() -> None:
    assert map_error_response(422, b"not json: the handler's answer", Api.INFERENCE) is None
    assert map_error_response(400, b'{"detail": "x"}', Api.INFERENCE) is None


def test_a_5xx_that_is_not_torchserve_json_is_replaced() -> None:
    error = map_error_response(502, b"Traceback (most recent call last): ...", Api.INFERENCE)
    assert isinstance(error, UpstreamFailure) and error.status == 502
    assert "Traceback" not in error.message


def test_retry_after_on_busy() -> None:
    error = map_error_response(
        503, ts_error(503, 'Model "m" has no worker to serve'), Api.INFERENCE
    )
    assert error is not None and (b"retry-after", b"1") in error.headers()


@pytest.mark.parametrize(
    "raw",
    [
        "org.pytorch.serve.archive.model.ModelNotFoundException: Model not found at: /tmp/x/y.mar",
        "java.lang.IllegalStateException: boom\n\tat org.pytorch.serve.wlm.WorkerThread.run(W:1)",
        'Traceback (most recent call last):\n  File "/srv/handler.py", line 3',
        "Failed to download archive from: http://10.0.0.1/secret.mar",
        "cannot open C:\\models\\weights.pt",
        "ModelNotFoundException: nope",
    ],
)
def test_sanitise_removes_internals(raw: str) -> None:
    clean = sanitise(raw)
    for leak in (
        "org.pytorch",
        "java.",
        "Exception",
        "Traceback",
        "/tmp",
        "/srv",
        "10.0.0.1",
        "C:\\",
        "\n",
    ):
        assert leak not in clean


def test_sanitise_keeps_plain_messages_and_bounds_length() -> None:
    assert sanitise("Model not found: resnet") == "Model not found: resnet"
    assert len(sanitise("x " * 1000)) <= 300


def test_parse_error_body() -> None:
    assert parse_error_body(ts_error(404, "m")) == (404, "m")
    for body in (b"", b"[]", b"{", b'{"code": "x", "type": "t", "message": "m"}', b"<html>"):
        assert parse_error_body(body) is None
