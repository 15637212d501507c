"""``memory_format = "channels_last"``: the archive runs the model on channels-last weights and
inputs, answers as the model does in its own layout, and the build refuses a model the
layout would break or change."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from archive.build import build_models
from archive.errors import GateError
from handlers.errors import SettingsError
from handlers.memory_format import lay_out_input
from handlers.settings import HandlerSettings
from handlers.torchserve_entry import CheckpointHandler
from tests.unit.archive.helpers import MockContext, mar_config, unpack, write_spec

MODELS = Path(__file__).parent / "layouts" / "conv_models.py"
BATCH = [
    torch.linspace(-1.0, 1.0, 32).reshape(2, 4, 4).tolist(),
    torch.linspace(2.0, -3.0, 32).reshape(2, 4, 4).tolist(),
    torch.full((2, 4, 4), 0.25).tolist(),
]


def weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    return {k: v.clone() for k, v in _module("SmallCnn")().state_dict().items()}


def _module(name: str) -> Any:
    namespace: dict[str, Any] = {}
    exec(compile(MODELS.read_text(), str(MODELS), "exec"), namespace)
    return namespace[name]


def entry(name: str, model_class: str, **keys: Any) -> dict[str, Any]:
    return {
        "name": name,
        "model_file": "model.py",
        "model_class": model_class,
        "checkpoint": "weights.pt",
        "task": "tensor",
        "input": {"shape": [2, 4, 4]},
        "serving": {"batch_size": 3},
        **keys,
    }


def build(root: Path, *entries: dict[str, Any]) -> dict[str, Path]:
    project = root / "project"
    project.mkdir(parents=True)
    shutil.copy(MODELS, project / "model.py")
    torch.save(weights(), project / "weights.pt")
    spec = write_spec(project / "models.toml", list(entries))
    return {r.name: r.path for r in build_models(spec, root / "store", progress=lambda _: None)}


def serve(mar: Path, where: Path, bodies: list[Any]) -> list[Any]:
    context = MockContext(unpack(mar, where))
    handler = CheckpointHandler()
    handler.initialize(context)
    answers = handler.handle([{"body": body} for body in bodies], context)
    assert not context.statuses, context.statuses
    return [json.loads(answer) for answer in answers]


def in_process(bodies: list[Any]) -> list[list[float]]:
    model = _module("SmallCnn")()
    model.load_state_dict(weights())
    with torch.inference_mode():
        rows: list[list[float]] = model.eval()(torch.tensor(bodies)).tolist()
    return rows


def test_a_channels_last_archive_answers_as_the_model_in_process(tmp_path: Path) -> None:
    built = build(
        tmp_path,
        entry("cl", "NeedsChannelsLast", memory_format="channels_last"),
        entry("plain", "SmallCnn"),
    )
    assert mar_config(built["cl"])["handler"]["memory_format"] == "channels_last"
    assert mar_config(built["plain"])["handler"]["memory_format"] == "contiguous"
    expected = in_process(BATCH)
    for name in ("cl", "plain"):
        answers = serve(built[name], tmp_path / name, BATCH)
        for answer, row in zip(answers, expected, strict=True):
            assert answer == pytest.approx(row, abs=1e-6)


def test_without_the_setting_the_inputs_keep_their_layout(tmp_path: Path) -> None:
    # The model that insists on channels-last inputs does not build without the setting: the
    # setting is what converts them.
    with pytest.raises(GateError, match="are not channels-last"):
        build(tmp_path, entry("unset", "NeedsChannelsLast"))


def test_a_model_that_views_a_convolution_output_is_refused_with_the_way_out(
    tmp_path: Path,
) -> None:
    with pytest.raises(GateError) as refused:
        build(tmp_path / "a", entry("views", "ViewsCnn", memory_format="channels_last"))
    message = str(refused.value)
    assert "model 'views' with memory_format = 'channels_last' fails example" in message
    assert ".view()" in message and "torch.flatten()" in message
    assert build(tmp_path / "b", entry("views", "ViewsCnn"))["views"].is_file()


def test_a_model_whose_answers_follow_the_layout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GateError, match="answers example .* otherwise than without it: largest"):
        build(tmp_path, entry("order", "MemoryOrder", memory_format="channels_last"))


def test_only_four_dimensional_floating_inputs_change_layout() -> None:
    image = torch.zeros(2, 3, 4, 5)
    converted = lay_out_input(image, "channels_last")
    assert converted.is_contiguous(memory_format=torch.channels_last)
    assert not converted.is_contiguous()
    ids = torch.zeros(2, 3, 4, 5, dtype=torch.int64)
    assert lay_out_input(ids, "channels_last") is ids
    vector = torch.zeros(2, 3)
    assert lay_out_input(vector, "channels_last") is vector
    assert lay_out_input(image, "contiguous") is image


def test_an_unknown_memory_format_is_refused() -> None:
    raw = {"model_file": "m.py", "model_class": "M", "checkpoint": "w.pt"}
    raw |= {"input": {"shape": [1]}, "memory_format": "nhwc"}
    with pytest.raises(SettingsError, match="'memory_format' must be one of contiguous, ch"):
        HandlerSettings.from_dict(raw)
