"""Shared pieces of the archive tests: fixed weights, specs written to disk, archive readers."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from tests.unit.handlers.helpers import MockContext as HandlerMockContext

MODELS_FILE = Path(__file__).with_name("tiny_models.py")


def tiny_state_dict() -> dict[str, torch.Tensor]:
    """Fixed weights for ``Tiny`` and ``TinyImage``: outputs are exact sums."""
    return {
        "linear.weight": torch.tensor(
            [[1.0, 2.0, 3.0, 4.0], [-1.0, 0.0, 1.0, 0.5], [0.25, 0.25, 0.25, 0.25]]
        ),
        "linear.bias": torch.tensor([0.5, -2.0, 0.0]),
    }


def tiny_expected(x: list[float]) -> list[float]:
    weights = tiny_state_dict()
    return (torch.tensor(x) @ weights["linear.weight"].T + weights["linear.bias"]).tolist()


def tensor_entry(name: str = "tiny", **overrides: Any) -> dict[str, Any]:
    """A spec entry for ``Tiny`` served as a tensor model; ``overrides`` replace keys."""
    entry: dict[str, Any] = {
        "name": name,
        "model_file": "model.py",
        "model_class": "Tiny",
        "checkpoint": "weights.pt",
        "task": "tensor",
        "input": {"shape": [4]},
        "serving": {"batch_size": 4},
    }
    entry.update(overrides)
    return entry


def image_entry(name: str = "tiny-image", **overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "model_file": "model.py",
        "model_class": "TinyImage",
        "checkpoint": "weights.pt",
        "task": "image-classification",
        "labels": "labels.json",
        "top_k": 2,
        "image": {"mode": "L", "size": [2, 2], "mean": [0.5], "std": [0.25]},
    }
    entry.update(overrides)
    return entry


def write_project(root: Path, entries: Sequence[Mapping[str, Any]]) -> Path:
    """``root/models.toml`` with ``entries``, ``model.py`` and ``labels.json`` beside it."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(MODELS_FILE, root / "model.py")
    (root / "labels.json").write_text(json.dumps({"0": "cat", "1": "dog", "2": "owl"}))
    return write_spec(root / "models.toml", entries)


def write_spec(path: Path, entries: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``entries`` as ``[[model]]`` tables (a small TOML writer: tests need no tomli-w)."""
    blocks = []
    for entry in entries:
        scalars = {
            k: v for k, v in entry.items() if not isinstance(v, Mapping) or k == "model_kwargs"
        }
        tables = {k: v for k, v in entry.items() if isinstance(v, Mapping) and k != "model_kwargs"}
        lines = ["[[model]]", *(f"{k} = {_toml(v)}" for k, v in scalars.items())]
        for key, table in tables.items():
            lines += [f"[model.{key}]", *(f"{k} = {_toml(v)}" for k, v in table.items())]
        blocks.append("\n".join(lines))
    path.write_text("\n\n".join(blocks) + "\n")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def mar_members(mar: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(mar) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def mar_weights(mar: Path) -> dict[str, torch.Tensor]:
    loaded = torch.load(io.BytesIO(mar_members(mar)["weights.pt"]), weights_only=True)
    assert isinstance(loaded, dict)
    return loaded


def mar_config(mar: Path) -> dict[str, Any]:
    config = yaml.safe_load(mar_members(mar)["model-config.yaml"])
    assert isinstance(config, dict)
    return config


def unpack(mar: Path, destination: Path) -> Path:
    """Extract ``mar`` as TorchServe does before it starts a worker."""
    with zipfile.ZipFile(mar) as archive:
        archive.extractall(destination)
    return destination


class MockContext(HandlerMockContext):
    """What TorchServe hands a handler for an unpacked archive, without Java
    (after ts/torch_handler/unit_tests/test_utils/mock_context.py)."""

    def __init__(self, model_dir: Path, gpu_id: Any = None) -> None:
        manifest = json.loads((model_dir / "MAR-INF" / "MANIFEST.json").read_text())
        config_file = model_dir / manifest["model"]["configFile"]
        super().__init__(model_dir, yaml.safe_load(config_file.read_text()), gpu_id)
        self.manifest = manifest
        self.model_name = manifest["model"]["modelName"]
