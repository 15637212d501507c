"""Examples recorded at build time and replayed at load; `inspect`, `check` and `try` on a
built archive, in this process (no Java)."""

from __future__ import annotations

import base64
import io
import json
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from archive.build import build_models
from archive.cli import main
from archive.errors import SpecError
from handlers.errors import GoldenAnswerError
from handlers.golden import Example, compare
from handlers.torchserve_entry import CheckpointHandler
from tests.support.tampering import edit_recorded_answers, rewrite_archive
from tests.unit.archive.helpers import (
    MockContext,
    image_entry,
    mar_members,
    tensor_entry,
    tiny_expected,
    tiny_state_dict,
    unpack,
    write_project,
)

HOOKS = """
import json

import torch

SCALE = {}


def setup(model, settings):
    SCALE.update(json.loads(settings.extra_files["scale.json"].read_text()))


def decode(body, content_type):
    if content_type != "text/plain":
        raise ValueError("send text: four comma-separated numbers")
    return torch.tensor([float(v) for v in body.split(",")]) * SCALE["scale"]


def encode(row):
    return [{"label": str(i), "score": round(float(v), 4)} for i, v in enumerate(row)]
"""


def build(tmp_path: Path, entry: dict[str, Any], files: dict[str, bytes] | None = None) -> Path:
    project = tmp_path / "project"
    spec = write_project(project, [entry])
    torch.save(tiny_state_dict(), project / "weights.pt")
    for name, data in (files or {}).items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_bytes(data)
    (result,) = build_models(spec, tmp_path / "store")
    return result.path


def recorded(mar: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(mar_members(mar)["examples.json"])
    return loaded


def load(mar: Path, folder: Path) -> CheckpointHandler:
    handler = CheckpointHandler()
    handler.initialize(MockContext(unpack(mar, folder)))
    return handler


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out = capsys.readouterr()
    return status, out.out, out.err


def nudge_bias(root: Path) -> None:
    weights = torch.load(root / "weights.pt", weights_only=True)
    weights["linear.bias"][0] += 0.01
    torch.save(weights, root / "weights.pt")


def test_without_examples_the_generated_bodies_are_recorded(tmp_path: Path) -> None:
    mar = build(tmp_path, tensor_entry())
    examples = recorded(mar)
    assert examples["tolerance"] == 1e-4
    names = [e["name"] for e in examples["examples"]]
    assert names == ["generated-1.json", "generated-2.npy"]
    first = examples["examples"][0]
    body = json.loads(base64.b64decode(first["body_base64"]))
    assert first["content_type"] == "application/json"
    assert first["answer"] == pytest.approx(tiny_expected(body))
    # Covered by the integrity manifest, like every file the handler reads.
    assert "examples.json" in json.loads(mar_members(mar)["integrity.json"])["files"]
    load(mar, tmp_path / "unpacked")  # replays at load: passes


def test_a_changed_weight_makes_the_load_fail_naming_the_example(tmp_path: Path) -> None:
    mar = build(tmp_path, tensor_entry())
    rewrite_archive(mar, nudge_bias)
    with pytest.raises(GoldenAnswerError) as failed:
        load(mar, tmp_path / "unpacked")
    message = str(failed.value)
    assert "example 'generated-1.json': largest difference 0.01 at $[0]" in message
    assert "example 'generated-2.npy'" in message
    assert "tolerance 0.0001" in message


def test_a_difference_within_the_tolerance_loads(tmp_path: Path) -> None:
    mar = build(tmp_path, tensor_entry(tolerance=0.05))
    rewrite_archive(mar, nudge_bias)
    load(mar, tmp_path / "unpacked")


def test_spec_examples_are_recorded_with_their_content_types(tmp_path: Path) -> None:
    npy = io.BytesIO()
    np.save(npy, np.array([1.0, 0.0, 0.0, 2.0], dtype=np.float32))
    entry = tensor_entry(
        examples=[
            "examples/a.json",
            {"file": "examples/b.data", "content_type": "application/x-npy"},
        ]
    )
    files = {"examples/a.json": b"[1.0, 2.0, 3.0, 4.0]", "examples/b.data": npy.getvalue()}
    mar = build(tmp_path, entry, files)
    examples = recorded(mar)["examples"]
    assert [(e["name"], e["content_type"]) for e in examples] == [
        ("a.json", "application/json"),
        ("b.data", "application/x-npy"),
    ]
    assert examples[0]["answer"] == pytest.approx(tiny_expected([1.0, 2.0, 3.0, 4.0]))
    assert examples[1]["answer"] == pytest.approx(tiny_expected([1.0, 0.0, 0.0, 2.0]))


def test_an_example_of_unknown_type_or_that_fails_stops_the_build(tmp_path: Path) -> None:
    entry = tensor_entry(examples=["examples/a.bin2"])
    with pytest.raises(SpecError, match="no content type for .bin2"):
        build(tmp_path / "one", entry, {"examples/a.bin2": b"[1, 2, 3, 4]"})
    entry = tensor_entry(examples=["examples/short.json"])
    with pytest.raises(Exception, match="expected a float32 array of shape"):
        build(tmp_path / "two", entry, {"examples/short.json": b"[1, 2]"})


def test_a_classifier_label_order_must_match_exactly() -> None:
    example = Example("a.png", "image/png", b"")
    assert compare(example, {"cat": 0.6, "dog": 0.4}, {"cat": 0.60001, "dog": 0.39999}, 1e-4).ok
    swapped = compare(example, {"cat": 0.5, "dog": 0.5}, {"dog": 0.5, "cat": 0.5}, 1.0)
    assert not swapped.ok and "keys ['cat', 'dog'] were recorded" in str(swapped.mismatch)
    label = compare(example, [{"label": "a"}], [{"label": "b"}], 1.0)
    assert not label.ok and "'a' was recorded at $[0]['label'], now 'b'" in str(label.mismatch)


def test_check_replays_every_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mar = build(tmp_path, image_entry())
    status, out, _ = run(capsys, "check", str(mar))
    assert status == 0, out
    assert "ok   generated-1.png: largest difference 0\n" in out
    assert "ok   generated-2.jpg: largest difference 0\n" in out
    assert "2 of 2 example(s) answer as recorded (tolerance 0.0001)" in out
    edit_recorded_answers(mar, lambda e: e["answer"].update({"cat": 0.25}))
    status, out, _ = run(capsys, "check", str(mar))
    assert status == 1
    assert "FAIL generated-1.png: largest difference 0.75 at $['cat'] (recorded 0.25" in out
    assert "0 of 2 example(s) answer as recorded" in out


def test_check_names_the_example_a_changed_weight_breaks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mar = build(tmp_path, tensor_entry())
    rewrite_archive(mar, nudge_bias)
    status, out, _ = run(capsys, "check", str(mar))
    assert status == 1
    assert "FAIL generated-1.json: largest difference 0.01 at $[0]" in out


def test_inspect_shows_the_examples_and_answers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mar = build(tmp_path, tensor_entry(examples=["a.json"]), {"a.json": b"[1, 2, 3, 4]"})
    status, out, _ = run(capsys, "inspect", str(mar))
    assert status == 0
    assert "examples.json: 1 example(s), replayed at load, tolerance 0.0001" in out
    assert "a.json (application/json, 12 bytes): [1, 2, 3, 4]" in out
    assert f"answer: {json.dumps(tiny_expected([1.0, 2.0, 3.0, 4.0]))}" in out


def test_try_answers_as_the_served_archive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mar = build(tmp_path, tensor_entry())
    handler = load(mar, tmp_path / "unpacked")
    served = handler.handle([{"body": [1.0, 2.0, 3.0, 4.0]}], MockContext(tmp_path / "unpacked"))
    status, out, _ = run(capsys, "try", str(mar), "[1.0, 2.0, 3.0, 4.0]")
    assert status == 0
    assert out.encode() == served[0] + b"\n"
    body = tmp_path / "x.npy"
    np.save(body, np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32))
    status, out, _ = run(capsys, "try", str(mar), str(body))
    assert status == 0 and json.loads(out) == pytest.approx(tiny_expected([1.0, 2.0, 3.0, 4.0]))
    status, out, err = run(capsys, "try", str(mar), "[1, 2]")
    assert status == 1 and "status 400" in err
    assert json.loads(out)["message"] == "expected a float32 array of shape [4]; got shape [2]"


def test_a_hooked_archive_packs_its_files_records_and_tries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = tensor_entry(
        task="custom",
        hooks="hooks/my_hooks.py",
        extra_files=["data/scale.json"],
        examples=["ex/one.txt"],
    )
    del entry["input"]
    files = {
        "hooks/my_hooks.py": textwrap.dedent(HOOKS).encode(),
        "data/scale.json": b'{"scale": 2.0}',
        "ex/one.txt": b"1,2,3,4",
    }
    mar = build(tmp_path, entry, files)
    members = mar_members(mar)
    assert members["my_hooks.py"] == files["hooks/my_hooks.py"]
    assert members["scale.json"] == files["data/scale.json"]
    want = [
        {"label": str(i), "score": round(v, 4)}
        for i, v in enumerate(tiny_expected([2.0, 4.0, 6.0, 8.0]))
    ]
    assert recorded(mar)["examples"][0]["answer"] == want
    status, out, _ = run(capsys, "try", str(mar), "1,2,3,4")
    assert status == 0 and json.loads(out) == want
    status, out, err = run(capsys, "try", str(mar), "[1, 2, 3, 4]")
    assert (
        status == 1
        and "status 400" in err
        and json.loads(out)["message"] == "send text: four comma-separated numbers"
    )
    status, out, _ = run(capsys, "check", str(mar))
    assert status == 0 and "ok   one.txt" in out
    status, out, _ = run(capsys, "inspect", str(mar))
    assert "hooks: my_hooks.py (extra files: scale.json)" in out


def test_a_custom_model_needs_examples_and_a_decode_hook_too(tmp_path: Path) -> None:
    entry = tensor_entry(task="custom", hooks="my_hooks.py")
    del entry["input"]
    with pytest.raises(SpecError, match="task 'custom' needs 'examples'"):
        build(tmp_path / "one", entry, {"my_hooks.py": HOOKS.encode()})
    # A decode hook on a task: the task's generated bodies are not what it reads.
    entry = tensor_entry(hooks="my_hooks.py", extra_files=["scale.json"])
    files = {"my_hooks.py": textwrap.dedent(HOOKS).encode(), "scale.json": b'{"scale": 1}'}
    with pytest.raises(Exception, match="its hooks define decode, so the build needs `examples`"):
        build(tmp_path / "two", entry, files)


def test_an_archive_without_examples_json_is_not_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mar = build(tmp_path, tensor_entry())
    rewrite_archive(mar, lambda root: (root / "examples.json").write_text("{}"))
    with zipfile.ZipFile(mar) as archive:
        assert "examples.json" in archive.namelist()
    status, _, err = run(capsys, "check", str(mar))
    assert status == 1 and "examples.json is unreadable" in err


def test_a_changed_example_hooks_or_extra_file_rebuilds_the_archive(tmp_path: Path) -> None:
    entry = tensor_entry(
        hooks="my_hooks.py", extra_files=["scale.json"], examples=["one.txt"], task="custom"
    )
    del entry["input"]
    files = {
        "my_hooks.py": textwrap.dedent(HOOKS).encode(),
        "scale.json": b'{"scale": 2.0}',
        "one.txt": b"1,2,3,4",
    }
    build(tmp_path, entry, files)
    spec = tmp_path / "project" / "models.toml"
    (again,) = build_models(spec, tmp_path / "store")
    assert again.status == "skipped"
    for name, data in [("one.txt", b"4,3,2,1"), ("scale.json", b'{"scale": 3.0}')]:
        (tmp_path / "project" / name).write_bytes(data)
        (rebuilt,) = build_models(spec, tmp_path / "store")
        assert rebuilt.status == "built", name
    answer = recorded(rebuilt.path)["examples"][0]["answer"]
    assert [a["score"] for a in answer] == [
        round(v, 4) for v in tiny_expected([12.0, 9.0, 6.0, 3.0])
    ]


def test_packed_names_must_not_collide(tmp_path: Path) -> None:
    entry = tensor_entry(hooks="hooks/model.py")
    with pytest.raises(Exception, match="would be packed as model.py"):
        build(tmp_path / "one", entry, {"hooks/model.py": b"def encode(row):\n    return 1\n"})
    with pytest.raises(SpecError, match="'extra_files' are read by hooks"):
        build(tmp_path / "two", tensor_entry(extra_files=["scale.json"]), {"scale.json": b"{}"})
