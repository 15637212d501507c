"""The TorchServe entry point, driven the way TorchServe drives it, without Java."""

import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from handlers.errors import IntegrityError
from handlers.integrity import MANIFEST_NAME, write_manifest
from handlers.torchserve_entry import CheckpointHandler
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
    answers = handler.handle(data, context)
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
    (answer,) = handler.handle([{"body": bytearray(buffer.getvalue())}], context)
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
