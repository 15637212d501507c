"""The TorchServe entry point, driven the way TorchServe drives it, without Java."""

import io
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from handlers import envelope
from handlers.errors import IntegrityError
from handlers.integrity import MANIFEST_NAME, write_manifest
from handlers.torchserve_entry import CheckpointHandler, drop_per_batch_log_line
from tests.unit.handlers.helpers import MODELS_FILE, MockContext, affine_expected, affine_state_dict


def model_dir(
    tmp_path: Path, weights: dict[str, torch.Tensor], labels: list[str] | None = None
) -> Path:
    root = tmp_path / "model"
    root.mkdir()
    shutil.copy(MODELS_FILE, root / "model.py")
    torch.save(weights, root / "weights.pt")
    files = ["model.py", "weights.pt"]
    if labels is not None:
        (root / "labels.json").write_text(json.dumps({str(i): n for i, n in enumerate(labels)}))
        files.append("labels.json")
    write_manifest(root, files)
    return root


def tensor_config() -> dict[str, Any]:
    return {
        "minWorkers": 1,
        "handler": {
            "model_file": "model.py",
            "model_class": "Affine",
            "checkpoint": "weights.pt",
            "task": "tensor",
            "input": {"shape": [4]},
        },
    }


def initialized(root: Path, config: dict[str, Any]) -> tuple[CheckpointHandler, MockContext]:
    context = MockContext(root, config)
    handler = CheckpointHandler()
    handler.initialize(context)
    assert handler.initialized
    return handler, context


def test_batch_with_one_bad_request(tmp_path: Path) -> None:
    handler, context = initialized(model_dir(tmp_path, affine_state_dict()), tensor_config())
    good = [1.0, 2.0, 3.0, 4.0]
    array = io.BytesIO()
    np.save(array, np.array(good, dtype=np.float32))
    data = [
        {"body": good},  # application/json, decoded by TorchServe
        {"body": bytearray(b"not json")},
        {"data": bytearray(array.getvalue())},  # application/x-npy
    ]
    answers = [json.loads(a) for a in handler.handle(data, context)]
    assert answers[0] == affine_expected(good) == answers[2]
    assert answers[1]["code"] == 400 and answers[1]["type"] == "InvalidInput"
    assert context.statuses == {1: (400, answers[1]["message"])}


def test_image_classification_with_labels(tmp_path: Path) -> None:
    weights = {"linear.weight": torch.eye(3, 4) * 10, "linear.bias": torch.zeros(3)}
    root = model_dir(tmp_path, weights, labels=["dark", "mid", "light"])
    config = {
        "handler": {
            "model_file": "model.py",
            "model_class": "PixelClassifier",
            "checkpoint": "weights.pt",
            "task": "image-classification",
            "labels": "labels.json",
            "image": {"mode": "L", "size": [2, 2]},
        }
    }
    handler, context = initialized(root, config)
    pixels = np.array([[255, 0], [0, 0]], dtype=np.uint8)  # only the first pixel lit: class 0
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    (raw,) = handler.handle([{"body": bytearray(buffer.getvalue())}], context)
    answer = json.loads(raw)
    assert list(answer) == ["dark", "mid", "light"]
    probs = torch.softmax(torch.tensor([10.0, 0.0, 0.0]), 0).tolist()
    assert answer == pytest.approx(dict(zip(["dark", "mid", "light"], probs, strict=True)))


def test_tampered_weights_refuse_to_load(tmp_path: Path) -> None:
    root = model_dir(tmp_path, affine_state_dict())
    data = bytearray((root / "weights.pt").read_bytes())
    data[-100] ^= 0xFF
    (root / "weights.pt").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="weights.pt does not match"):
        initialized(root, tensor_config())


def test_archive_without_manifest_refuses_to_load(tmp_path: Path) -> None:
    root = model_dir(tmp_path, affine_state_dict())
    (root / MANIFEST_NAME).unlink()
    with pytest.raises(IntegrityError, match="no integrity.json"):
        initialized(root, tensor_config())


def npy_bytes(values: list[float]) -> bytes:
    array = io.BytesIO()
    np.save(array, np.array(values, dtype=np.float32))
    return array.getvalue()


def test_an_envelope_joins_the_batch_and_answers_each_item_as_alone(tmp_path: Path) -> None:
    handler, context = initialized(model_dir(tmp_path, affine_state_dict()), tensor_config())
    first, second, third = [1.0, 2.0, 3.0, 4.0], [0.5, 0.0, -1.0, 2.0], [4.0, 3.0, 2.0, 1.0]
    items = [
        envelope.Item("application/json", json.dumps(second).encode()),
        envelope.Item("application/json", b"[1, 2]"),  # wrong shape: fails alone
        envelope.Item("application/x-npy", npy_bytes(third)),
    ]
    data = [{"body": first}, {"body": bytearray(envelope.pack_request(items))}]
    context.with_body_content_types("application/json", envelope.CONTENT_TYPE)
    plain, packed = handler.handle(data, context)

    assert json.loads(plain) == affine_expected(first)
    assert context.statuses == {}
    assert context.response_headers[1]["content-type"] == envelope.CONTENT_TYPE
    assert all(context.response_headers[i][envelope.ACCEPTS_HEADER] == "1" for i in (0, 1))
    ok, bad, npy = envelope.unpack_answers(packed)
    assert (ok.status, json.loads(ok.body)) == (200, affine_expected(second))
    assert (npy.status, json.loads(npy.body)) == (200, affine_expected(third))
    assert bad.status == 400 and json.loads(bad.body)["type"] == "InvalidInput"

    # Each item's answer is byte for byte what TorchServe would send for it alone.
    alone_context = MockContext(tmp_path, {}).with_body_content_types("application/json")
    (alone,) = handler.handle([{"body": [1, 2]}], alone_context)
    assert bad.body == alone == json.dumps(json.loads(alone), indent=2).encode()
    assert ok.body == json.dumps(affine_expected(second), indent=2).encode()


def test_a_malformed_envelope_fails_alone(tmp_path: Path) -> None:
    handler, context = initialized(model_dir(tmp_path, affine_state_dict()), tensor_config())
    good = [1.0, 2.0, 3.0, 4.0]
    truncated = envelope.pack_request([envelope.Item("application/json", b"[1]")])[:-1]
    context.with_body_content_types(envelope.CONTENT_TYPE, "application/json")
    broken, answer = (
        json.loads(a)
        for a in handler.handle([{"body": bytearray(truncated)}, {"body": good}], context)
    )
    assert broken["code"] == 400 and "truncated" in broken["message"]
    assert context.statuses == {0: (400, broken["message"])}
    assert answer == affine_expected(good)


def test_a_body_that_merely_looks_like_an_envelope_is_a_plain_input(tmp_path: Path) -> None:
    # Without the envelope's Content-Type, the magic bytes mean nothing special.
    handler, context = initialized(model_dir(tmp_path, affine_state_dict()), tensor_config())
    body = bytearray(envelope.pack_request([envelope.Item("application/json", b"[1, 2, 3, 4]")]))
    context.with_body_content_types("application/octet-stream")
    (answer,) = map(json.loads, handler.handle([{"body": body}], context))
    assert answer["code"] == 400
    assert envelope.CONTENT_TYPE not in context.response_headers[0].values()


def test_an_answer_json_cannot_hold_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, context = initialized(model_dir(tmp_path, affine_state_dict()), tensor_config())
    assert handler.predictor is not None
    task = handler.predictor.task
    real_encode_rows = task.encode_rows

    def first_row_badly(output: torch.Tensor, count: int) -> list[Any] | None:
        rows = real_encode_rows(output, count)
        assert rows is not None
        return [{"not json": object()}, *rows[1:]]

    monkeypatch.setattr(task, "encode_rows", first_row_badly)
    context = MockContext(tmp_path, {})
    bad, good = handler.handle([{"body": [1.0, 2.0, 3.0, 4.0]}, {"body": [0.0] * 4}], context)
    assert json.loads(bad)["code"] == 500 and "not JSON" in json.loads(bad)["message"]
    assert context.statuses == {0: (500, json.loads(bad)["message"])}
    assert json.loads(good) == [0.5, -2.0]


def test_torchserve_per_batch_log_line_is_dropped_at_the_source(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = logging.getLogger()
    try:
        served = model_dir(tmp_path, affine_state_dict())
        initialized(served, tensor_config())
        initialized(served, tensor_config())  # a second model in the same worker process
        assert root.filters.count(drop_per_batch_log_line) == 1
        with caplog.at_level(logging.INFO):
            # What ts/protocol/otf_message_handler.py logs for each batch, and something else.
            logging.info("Backend received inference at: %d", 1700000000)
            logging.info("Backend worker process started")
        assert [r.getMessage() for r in caplog.records] == ["Backend worker process started"]
    finally:
        root.removeFilter(drop_per_batch_log_line)
