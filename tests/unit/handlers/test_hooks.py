"""A user's decode, encode and setup hooks, driven through the handler's entry point as
TorchServe drives it (without Java), with a fixed-weight model so answers are exact."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from handlers import envelope
from handlers.errors import ModelBuildError, SettingsError
from handlers.integrity import write_manifest
from handlers.torchserve_entry import CheckpointHandler
from tests.unit.handlers.helpers import (
    MODELS_FILE,
    MockContext,
    affine_expected,
    affine_state_dict,
)

HOOKS = """
import json

import torch

SCALE = {}
SEEN = []


def setup(model, settings):
    # Reads an extra file packed with the archive, and sees the loaded model.
    SCALE.update(json.loads(settings.extra_files["scale.json"].read_text()))
    SEEN.append((type(model).__name__, str(settings.device), settings.model_dir.name))


def decode(body, content_type):
    if content_type == "text/plain":
        values = [float(v) for v in body.split(",")]  # ValueError: the client's fault
        if len(values) != 4:
            raise ValueError(f"expected 4 comma-separated numbers, got {len(values)}")
    elif content_type == "application/json":
        values = body["x"]  # a KeyError here is the hook's own bug: a 500
    elif content_type == "application/x-wrong":
        return [1.0, 2.0]  # not a tensor
    else:
        raise RuntimeError("no decoder for " + str(content_type))
    return torch.tensor(values, dtype=torch.float32) * SCALE["scale"]


def encode(row):
    if float(row[0]) > 1000:
        return {"bad": float("nan")}  # JSON can't hold NaN
    if float(row[0]) < -1000:
        return row  # a tensor: not JSON either
    if float(row[1]) == 123.0:
        raise ZeroDivisionError("encode hook marker")
    return {"first": float(row[0]), "total": float(row.sum())}
"""


def model_dir(tmp_path: Path, hooks: str = HOOKS, scale: float = 2.0, extra: bool = True) -> Path:
    root = tmp_path / "model"
    root.mkdir()
    shutil.copy(MODELS_FILE, root / "model.py")
    torch.save(affine_state_dict(), root / "weights.pt")
    (root / "my_hooks.py").write_text(textwrap.dedent(hooks))
    files = ["model.py", "weights.pt", "my_hooks.py"]
    if extra:
        (root / "scale.json").write_text(json.dumps({"scale": scale}))
        files.append("scale.json")
    write_manifest(root, files)
    return root


def config(task: str = "custom", **extra: Any) -> dict[str, Any]:
    handler: dict[str, Any] = {
        "model_file": "model.py",
        "model_class": "Affine",
        "checkpoint": "weights.pt",
        "task": task,
        "hooks": "my_hooks.py",
        "extra_files": ["scale.json"],
    }
    handler.update(extra)
    return {"minWorkers": 1, "handler": handler}


def initialized(root: Path, cfg: dict[str, Any]) -> tuple[CheckpointHandler, MockContext]:
    context = MockContext(root, cfg)
    handler = CheckpointHandler()
    handler.initialize(context)
    return handler, context


def answers(handler: CheckpointHandler, context: MockContext, *requests: Any) -> list[Any]:
    """``requests``: (content type, body as TorchServe hands it over)."""
    context.with_body_content_types(*(kind for kind, _ in requests))
    data = [{"body": body} for _, body in requests]
    return [json.loads(a) for a in handler.handle(data, context)]


def expected(x: list[float], scale: float = 2.0) -> dict[str, float]:
    row = affine_expected([v * scale for v in x])
    return {"first": row[0], "total": row[0] + row[1]}


def test_all_three_hooks_answer_a_custom_model(tmp_path: Path) -> None:
    handler, context = initialized(model_dir(tmp_path), config())
    got = answers(
        handler,
        context,
        ("text/plain", "1,2,3,4"),
        ("application/json", {"x": [0.5, 0.0, -1.0, 2.0]}),
    )
    assert got[0] == pytest.approx(expected([1, 2, 3, 4]))
    assert got[1] == pytest.approx(expected([0.5, 0.0, -1.0, 2.0]))
    assert context.statuses == {}


def test_setup_reads_an_extra_file_and_sees_the_model(tmp_path: Path) -> None:
    handler, context = initialized(model_dir(tmp_path, scale=3.0), config())
    (got,) = answers(handler, context, ("text/plain", "1,2,3,4"))
    assert got == pytest.approx(expected([1, 2, 3, 4], scale=3.0))
    assert got != pytest.approx(expected([1, 2, 3, 4], scale=2.0))


def test_a_decode_that_refuses_the_body_is_a_400_with_its_message(tmp_path: Path) -> None:
    handler, context = initialized(model_dir(tmp_path), config())
    got = answers(
        handler,
        context,
        ("text/plain", "1,2"),
        ("text/plain", "1,x,3,4"),
        ("text/plain", "1,2,3,4"),
    )
    assert got[0] == {
        "code": 400,
        "type": "InvalidInput",
        "message": "expected 4 comma-separated numbers, got 2",
    }
    assert got[1]["code"] == 400 and "could not convert string to float" in got[1]["message"]
    assert got[2] == pytest.approx(expected([1, 2, 3, 4]))  # its batch-mate is answered
    assert set(context.statuses) == {0, 1}


def test_a_decode_that_fails_otherwise_is_a_500_with_its_message(tmp_path: Path) -> None:
    handler, context = initialized(model_dir(tmp_path), config())
    got = answers(
        handler,
        context,
        ("application/json", {"y": 1}),
        ("image/png", bytearray(b"\x89PNG")),
        ("application/x-wrong", bytearray(b"")),
        ("text/plain", "1,2,3,4"),
    )
    assert got[0] == {
        "code": 500,
        "type": "ModelError",
        "message": "the decode hook failed: KeyError: 'x'",
    }
    assert got[1]["code"] == 500 and "RuntimeError: no decoder for image/png" in got[1]["message"]
    assert got[2]["code"] == 500 and "must return a tensor or a dict" in got[2]["message"]
    assert got[3] == pytest.approx(expected([1, 2, 3, 4]))
    assert all("Traceback" not in json.dumps(g) for g in got)


def test_an_encode_that_raises_fails_its_request_alone(tmp_path: Path) -> None:
    # Affine's second output is -x0 + x2 + 0.5 x3 - 2: 123 for x = [0, 0, 125, 0] / scale 2.
    handler, context = initialized(model_dir(tmp_path), config())
    got = answers(handler, context, ("text/plain", "0,0,62.5,0"), ("text/plain", "1,2,3,4"))
    assert got[0] == {
        "code": 500,
        "type": "ModelError",
        "message": "the encode hook failed: ZeroDivisionError: encode hook marker",
    }
    assert got[1] == pytest.approx(expected([1, 2, 3, 4]))


def test_an_encode_whose_answer_json_cannot_hold_fails_alone(tmp_path: Path) -> None:
    handler, context = initialized(model_dir(tmp_path), config())
    got = answers(
        handler,
        context,
        ("text/plain", "1000,0,0,0"),  # NaN in the answer
        ("text/plain", "-1000,0,0,0"),  # a tensor as the answer
        ("text/plain", "1,2,3,4"),
    )
    for failed in got[:2]:
        assert failed["code"] == 500 and failed["type"] == "ModelError"
        assert failed["message"].startswith("the encode hook's answer is not JSON")
    assert got[2] == pytest.approx(expected([1, 2, 3, 4]))
    assert set(context.statuses) == {0, 1}


def test_hooks_left_undefined_come_from_the_task(tmp_path: Path) -> None:
    only_encode = "def encode(row):\n    return {'sum': round(float(row.sum()), 4)}\n"
    root = model_dir(tmp_path, hooks=only_encode, extra=False)
    cfg = config("tensor", input={"shape": [4]})
    del cfg["handler"]["extra_files"]
    handler, context = initialized(root, cfg)
    (got,) = answers(handler, context, ("application/json", [1.0, 2.0, 3.0, 4.0]))
    assert got == {"sum": round(sum(affine_expected([1.0, 2.0, 3.0, 4.0])), 4)}
    # The task's own decode, with its own 400.
    (bad,) = answers(handler, context, ("application/json", [1.0, 2.0]))
    assert bad["code"] == 400 and "expected a float32 array of shape [4]" in bad["message"]


def test_a_custom_task_needs_decode_and_encode(tmp_path: Path) -> None:
    root = model_dir(tmp_path, hooks="def encode(row):\n    return 1\n")
    with pytest.raises(SettingsError, match="does not define decode"):
        initialized(root, config())


def test_a_setup_that_fails_stops_the_load_naming_the_hook(tmp_path: Path) -> None:
    broken = "def setup(model, settings):\n    raise OSError('cannot open tokenizer')\n"
    root = model_dir(tmp_path, hooks=broken, extra=False)
    cfg = config("tensor", input={"shape": [4]})
    del cfg["handler"]["extra_files"]
    with pytest.raises(ModelBuildError, match="setup hook of my_hooks.py failed: OSError"):
        initialized(root, cfg)


def test_a_hooks_file_that_defines_no_hook_is_refused(tmp_path: Path) -> None:
    root = model_dir(tmp_path, hooks="X = 1\n")
    with pytest.raises(ModelBuildError, match="defines none of the hooks"):
        initialized(root, config())


def test_the_gateways_batches_reach_decode_with_each_items_content_type(tmp_path: Path) -> None:
    handler, context = initialized(model_dir(tmp_path), config())
    packed = envelope.pack_request(
        [
            envelope.Item("text/plain", b"1,2,3,4"),
            envelope.Item("application/json", b'{"x": [0.5, 0.0, -1.0, 2.0]}'),
            envelope.Item("text/plain", b"1,2"),
        ]
    )
    context.with_body_content_types(envelope.CONTENT_TYPE)
    (answer,) = handler.handle([{"body": bytearray(packed)}], context)
    items = envelope.unpack_answers(answer)
    assert [item.status for item in items] == [200, 200, 400]
    assert json.loads(items[0].body) == pytest.approx(expected([1, 2, 3, 4]))
    assert json.loads(items[1].body) == pytest.approx(expected([0.5, 0.0, -1.0, 2.0]))
    assert json.loads(items[2].body)["message"] == "expected 4 comma-separated numbers, got 2"
