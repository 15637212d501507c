"""Every checkpoint format the loader accepts becomes the same clean archive, which serves."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.serialization
from safetensors.torch import save_file

from archive.build import build_models
from handlers.integrity import MANIFEST_NAME
from handlers.torchserve_entry import CheckpointHandler
from tests.unit.archive.helpers import (
    MockContext,
    image_entry,
    mar_config,
    mar_members,
    mar_weights,
    tensor_entry,
    tiny_expected,
    tiny_state_dict,
    unpack,
    write_project,
)

HANDLERS_DIR = Path(__file__).resolve().parents[3] / "handlers"
HANDLER_FILES = {
    f"handlers/{path.relative_to(HANDLERS_DIR).as_posix()}"
    for path in HANDLERS_DIR.rglob("*.py")
    if "__pycache__" not in path.parts
}


def with_prefix(prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + key: value for key, value in tiny_state_dict().items()}


def save_bare(path: Path) -> None:
    torch.save(tiny_state_dict(), path)


def save_training(path: Path) -> None:
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    torch.save(
        {
            "epoch": 7,
            "model_state_dict": tiny_state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
            "loss": 0.125,
        },
        path,
    )


def save_multi(path: Path) -> None:
    other = {key: torch.zeros_like(value) for key, value in tiny_state_dict().items()}
    torch.save({"generator": other, "discriminator": tiny_state_dict(), "step": 3}, path)


def save_data_parallel(path: Path) -> None:
    from tests.unit.archive.tiny_models import Tiny

    model = Tiny()
    model.load_state_dict(tiny_state_dict())
    # DataParallel on a CPU-only machine wraps without replicating: the keys get "module.".
    torch.save(torch.nn.DataParallel(model).state_dict(), path)


def save_compiled(path: Path) -> None:
    # torch.compile's wrapper names its child _orig_mod; written directly, compiling takes seconds.
    torch.save({"model_state_dict": with_prefix("_orig_mod.")}, path)


def save_gpu(path: Path) -> None:
    # A file saved on a GPU records "cuda:0" as each storage's location; loading it on a
    # CPU-only machine works only with map_location. Fabricated without a GPU:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(tiny_state_dict(), path)


def save_safetensors(path: Path) -> None:
    save_file(tiny_state_dict(), str(path))


FORMATS: dict[str, tuple[str, Callable[[Path], None], dict[str, Any]]] = {
    "bare .pt": ("weights.pt", save_bare, {}),
    "bare .pth": ("weights.pth", save_bare, {}),
    "safetensors": ("weights.safetensors", save_safetensors, {}),
    "training checkpoint": ("checkpoint.pt", save_training, {}),
    "multi-model with checkpoint_key": ("gan.pt", save_multi, {"checkpoint_key": "discriminator"}),
    "DataParallel module. prefix": ("dp.pt", save_data_parallel, {}),
    "torch.compile _orig_mod. prefix": ("compiled.pt", save_compiled, {}),
    "saved on a GPU": ("gpu.pt", save_gpu, {}),
}


def build_one(tmp_path: Path, entry: dict[str, Any]) -> Path:
    spec = write_project(tmp_path / "project", [entry])
    store = tmp_path / "store"
    (result,) = build_models(spec, store)
    assert result.status == "built"
    assert result.path == store / f"{entry['name']}.mar"
    return result.path


def handler_for(mar: Path, tmp_path: Path) -> tuple[CheckpointHandler, MockContext]:
    context = MockContext(unpack(mar, tmp_path / "unpacked"))
    handler = CheckpointHandler()
    handler.initialize(context)
    return handler, context


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_builds_a_clean_archive_that_serves(tmp_path: Path, fmt: str) -> None:
    file_name, save, extra = FORMATS[fmt]
    project = tmp_path / "project"
    project.mkdir()
    save(project / file_name)
    mar = build_one(tmp_path, tensor_entry(checkpoint=file_name, **extra))

    members = mar_members(mar)
    assert set(members) == {
        "MAR-INF/MANIFEST.json",
        "MAR-INF/build.json",
        "torchserve_entry.py",
        "model.py",
        "weights.pt",
        "model-config.yaml",
        MANIFEST_NAME,
        "examples.json",
        *HANDLER_FILES,
    }
    assert members["torchserve_entry.py"] == members["handlers/torchserve_entry.py"]
    # Exactly the clean keys and the checkpoint's values: no optimizer state, no prefixes.
    weights = mar_weights(mar)
    assert list(weights) == ["linear.weight", "linear.bias"]
    for key, value in tiny_state_dict().items():
        assert torch.equal(weights[key], value)
        assert weights[key].is_contiguous() and not weights[key].requires_grad
    handler_settings = mar_config(mar)["handler"]
    assert handler_settings["checkpoint"] == "weights.pt"
    assert "checkpoint_key" not in handler_settings
    assert handler_settings["model_file"] == "model.py"

    handler, context = handler_for(mar, tmp_path)
    x = [1.0, -2.0, 0.5, 3.0]
    (answer,) = map(json.loads, handler.handle([{"body": x}], context))
    assert answer == pytest.approx(tiny_expected(x))


def test_manifest_and_model_config(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    save_bare(project / "weights.pt")
    entry = tensor_entry(
        version="2.1",
        serving={"batch_size": 16, "max_batch_delay_ms": 20, "workers": 2, "response_timeout_s": 9},
    )
    mar = build_one(tmp_path, entry)
    manifest = json.loads(mar_members(mar)["MAR-INF/MANIFEST.json"])
    assert manifest["model"] == {
        "modelName": "tiny",
        "serializedFile": "weights.pt",
        "handler": "torchserve_entry.py",
        "modelFile": "model.py",
        "modelVersion": "2.1",
        "configFile": "model-config.yaml",
    }
    assert manifest["runtime"] == "python"
    config = mar_config(mar)
    assert {k: v for k, v in config.items() if k != "handler"} == {
        "minWorkers": 2,
        "maxWorkers": 2,
        "batchSize": 16,
        "maxBatchDelay": 20,
        "responseTimeout": 9,
    }
    assert config["handler"]["input"] == {"shape": [4], "dtype": "float32"}


def test_an_archive_names_workers_only_when_the_spec_does(tmp_path: Path) -> None:
    # TorchServe keeps a model-config's minWorkers over the initial_workers of a
    # registration: without `workers` in the spec, TORCHSERVE_WORKERS_PER_MODEL decides.
    project = tmp_path / "project"
    project.mkdir()
    save_bare(project / "weights.pt")
    mar = build_one(tmp_path, tensor_entry(serving={"batch_size": 2}))
    config = mar_config(mar)
    assert "minWorkers" not in config and "maxWorkers" not in config
    assert config["batchSize"] == 2


def test_integrity_manifest_covers_every_file_but_itself_and_mar_inf(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    save_bare(project / "weights.pt")
    mar = build_one(tmp_path, image_entry())
    members = mar_members(mar)
    listed = json.loads(members[MANIFEST_NAME])["files"]
    assert set(listed) == {
        name for name in members if name != MANIFEST_NAME and not name.startswith("MAR-INF/")
    }
    assert "labels.json" in listed
    assert json.loads(members["labels.json"]) == {"0": "cat", "1": "dog", "2": "owl"}


def test_image_archive_serves_png_with_labels(tmp_path: Path) -> None:
    import io

    from PIL import Image

    project = tmp_path / "project"
    project.mkdir()
    save_bare(project / "weights.pt")
    mar = build_one(tmp_path, image_entry())
    assert mar_config(mar)["handler"]["labels"] == "labels.json"
    handler, context = handler_for(mar, tmp_path)
    body = io.BytesIO()
    Image.new("L", (2, 2), color=255).save(body, format="PNG")
    (answer,) = map(json.loads, handler.handle([{"data": bytearray(body.getvalue())}], context))
    # Pixels of 255 normalise to (1 - 0.5) / 0.25 = 2: logits are 2 * row sums + bias.
    logits = torch.tensor(tiny_expected([2.0, 2.0, 2.0, 2.0]))
    probabilities = torch.softmax(logits, dim=0)
    assert list(answer) == ["cat", "owl"]
    assert answer["cat"] == pytest.approx(float(probabilities[0]))


def test_strict_false_archives_what_loaded_and_what_the_build_initialised(
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    partial = {"linear.weight": tiny_state_dict()["linear.weight"], "extra.head": torch.ones(2)}
    torch.save(partial, project / "weights.pt")
    mar = build_one(tmp_path, tensor_entry(strict=False, init_seed=7))
    weights = mar_weights(mar)
    assert list(weights) == ["linear.weight", "linear.bias"]
    assert torch.equal(weights["linear.weight"], partial["linear.weight"])
    # The bias the checkpoint lacks: the class's own initialisation, seeded by init_seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        expected_bias = torch.nn.Linear(4, 3).bias.detach()
    assert torch.equal(weights["linear.bias"], expected_bias)
    assert mar_config(mar)["handler"]["strict"] is False
    assert mar_config(mar)["handler"]["init_seed"] == 7
    handler, _ = handler_for(mar, tmp_path)
    assert handler.predictor is not None
    loaded = handler.predictor.model.state_dict()
    assert torch.equal(loaded["linear.weight"], partial["linear.weight"])
    assert torch.equal(loaded["linear.bias"], expected_bias)
    assert handler.predictor.report.clean  # the archive holds every tensor


def test_weights_are_saved_without_the_storage_they_were_sliced_from(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    big = torch.zeros(1000, 4)
    big[:3] = tiny_state_dict()["linear.weight"]
    # Both slices of one big storage: torch.save writes all 4,000 floats for them.
    sliced = {"linear.weight": big[:3], "linear.bias": big[3, :3]}
    sliced["linear.bias"].copy_(tiny_state_dict()["linear.bias"])
    torch.save(sliced, project / "weights.pt")
    mar = build_one(tmp_path, tensor_entry())
    weights = mar_weights(mar)
    for key, value in tiny_state_dict().items():
        assert torch.equal(weights[key], value)
        assert weights[key].untyped_storage().nbytes() == value.numel() * 4
    assert len(mar_members(mar)["weights.pt"]) < 4_000


def test_zip_entries_are_sorted_with_fixed_time_and_mode(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    save_bare(project / "weights.pt")
    mar = build_one(tmp_path, tensor_entry())
    with zipfile.ZipFile(mar) as archive:
        infos = archive.infolist()
    assert [info.filename for info in infos] == sorted(info.filename for info in infos)
    assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {info.external_attr >> 16 for info in infos} == {0o100644}
    stored = {info.filename for info in infos if info.compress_type == zipfile.ZIP_STORED}
    assert stored == {"weights.pt"}
