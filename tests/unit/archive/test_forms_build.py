"""The build's gate and archive for every form: variable lengths (grouped and padded), named
inputs, text, another method, structured outputs, warm starts; what model-config.yaml says of
them; and ``python -m archive inspect`` on the archive."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from archive.build import build_models
from archive.cli import main as archive_main
from archive.errors import GateError
from handlers.torchserve_entry import CheckpointHandler
from tests.unit.archive.helpers import MockContext, mar_config, mar_members, unpack, write_spec
from tests.unit.handlers import test_forms
from tests.unit.handlers.helpers import MODELS_FILE

DICT_WEIGHTS = test_forms.DICT_WEIGHTS


def entry(name: str, model_class: str, checkpoint: str, **keys: Any) -> dict[str, Any]:
    return {
        "name": name,
        "model_file": "model.py",
        "model_class": model_class,
        "checkpoint": checkpoint,
        "task": "tensor",
        "serving": {"batch_size": 4},
        **keys,
    }


ENTRIES = {
    "lengths": entry(
        "lengths",
        "WordAverage",
        "words.pt",
        input={"shape": [-1], "dtype": "int64", "range": [0, 5], "max_elements": 64},
    ),
    "padded": entry(
        "padded",
        "WordAverage",
        "words.pt",
        input={"shape": [-1], "dtype": "int64", "pad_value": 1, "lengths_arg": "lengths"},
    ),
    "named": entry(
        "named",
        "Masked",
        "masked.pt",
        inputs=[{"name": "x", "shape": [-1]}, {"name": "mask", "shape": [-1], "range": [0, 1]}],
    ),
    "generate": entry(
        "generate",
        "Generator",
        "generator.pt",
        method="generate",
        method_kwargs={"max_new_tokens": 4},
        input={"shape": [3]},
    ),
    "dict": entry(
        "dict",
        "DictClassifier",
        "dict.pt",
        task="image-classification",
        labels="labels.json",
        top_k=2,
        output="logits",
        image={"mode": "L", "size": [2, 2]},
    ),
    "text": entry(
        "text",
        "WordAverage",
        "words.pt",
        task="text-classification",
        labels="labels.json",
        top_k=3,
        text={"vocab": "vocab.json", "unk_token": "<unk>", "pad_token": "<pad>", "max_tokens": 9},
        input={"shape": [-1], "lengths_arg": "lengths"},
    ),
    "warm": entry("warm", "WarmStart", "body.pt", strict=False, init_seed=5, input={"shape": [4]}),
}


def project(root: Path, *names: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(MODELS_FILE, root / "model.py")
    torch.save(test_forms.word_average_weights(), root / "words.pt")
    torch.save({"scale": torch.tensor(3.0)}, root / "masked.pt")
    torch.save({"step": torch.tensor(0.5)}, root / "generator.pt")
    torch.save(DICT_WEIGHTS, root / "dict.pt")
    body = {
        k: torch.full_like(v, 0.1)
        for k, v in test_forms.tiny_models.WarmStart().state_dict().items()
    }
    torch.save({k: v for k, v in body.items() if k.startswith("body.")}, root / "body.pt")
    (root / "vocab.json").write_text(json.dumps(test_forms.VOCAB))
    (root / "labels.json").write_text(json.dumps(["pos", "neg", "meh"]))
    return write_spec(root / "models.toml", [ENTRIES[name] for name in names])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("forms")
    spec = project(root / "project", *ENTRIES)
    lines: list[str] = []
    results = build_models(spec, root / "store", progress=lines.append)
    (root / "build.log").write_text("\n".join(lines))
    return {result.name: result.path for result in results}


def serve(mar: Path, tmp_path: Path, bodies: list[Any]) -> list[Any]:
    context = MockContext(unpack(mar, tmp_path / mar.stem))
    handler = CheckpointHandler()
    handler.initialize(context)
    answers = handler.handle([{"body": body} for body in bodies], context)
    assert not context.statuses, context.statuses
    return [json.loads(answer) for answer in answers]


def test_every_form_builds_and_its_archive_answers(built: dict[str, Path], tmp_path: Path) -> None:
    sequences = [[2, 3, 4], [2, 2, 3, 4, 5]]
    expected = [test_forms.word_average_logits(ids) for ids in sequences]
    for name in ("lengths", "padded"):
        for answer, logits in zip(serve(built[name], tmp_path, sequences), expected, strict=True):
            assert answer == pytest.approx(logits, abs=1e-6)
    named = [{"x": [1.0, 2.0, 4.0], "mask": [1, 0, 1]}, {"x": [0.5], "mask": [1]}]
    assert serve(built["named"], tmp_path, named) == [[5.0, 15.0], [0.5, 1.5]]
    assert serve(built["generate"], tmp_path, [[0.0, 0.0, 1.0]]) == [[1.5, 2.0, 2.5, 3.0]]
    png = io.BytesIO()
    Image.fromarray(np.array([[0, 64], [128, 255]], dtype=np.uint8), mode="L").save(png, "PNG")
    (ranked,) = serve(built["dict"], tmp_path, [bytearray(png.getvalue())])
    pixels = (torch.tensor([0.0, 64.0, 128.0]) / 255.0).tolist()
    assert ranked == pytest.approx(dict(list(test_forms.ranked(pixels).items())[:2]))
    text = serve(built["text"], tmp_path, ["Good film!", [2, 4, 5]])
    logits = test_forms.word_average_logits([2, 4, 5])
    assert text[0] == text[1] == pytest.approx(test_forms.ranked(logits))
    assert list(text[0]) == list(test_forms.ranked(logits))


def test_model_config_holds_the_keys_of_every_form(built: dict[str, Path]) -> None:
    lengths = mar_config(built["lengths"])["handler"]
    assert lengths["task"] == "tensor"
    assert lengths["input"] == {
        "shape": [-1],
        "dtype": "int64",
        "max_elements": 64,
        "range": [0.0, 5.0],
    }
    assert lengths["method"] == "forward" and lengths["method_kwargs"] == {}
    padded = mar_config(built["padded"])["handler"]["input"]
    assert (padded["pad_value"], padded["lengths_arg"]) == (1.0, "lengths")
    named = mar_config(built["named"])["handler"]
    assert "input" not in named
    assert [i["name"] for i in named["inputs"]] == ["x", "mask"]
    assert named["inputs"][1] == {
        "shape": [-1],
        "dtype": "float32",
        "range": [0.0, 1.0],
        "name": "mask",
    }
    generate = mar_config(built["generate"])["handler"]
    assert (generate["method"], generate["method_kwargs"]) == ("generate", {"max_new_tokens": 4})
    dict_ = mar_config(built["dict"])["handler"]
    assert (dict_["task"], dict_["output"], dict_["top_k"]) == ("image-classification", "logits", 2)
    assert dict_["image"]["size"] == [2, 2]
    text = mar_config(built["text"])["handler"]
    assert text["task"] == "text-classification"
    assert text["text"] == {
        "vocab": "vocab.json",
        "lowercase": True,
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "max_tokens": 9,
    }
    assert text["input"] == {"shape": [-1], "dtype": "int64", "lengths_arg": "lengths"}
    assert json.loads(mar_members(built["text"])["vocab.json"]) == test_forms.VOCAB


def test_a_warm_start_packs_what_it_initialised_and_says_so(
    built: dict[str, Path], tmp_path: Path
) -> None:
    log = (built["warm"].parent.parent / "build.log").read_text()
    assert "warm: initialised, not loaded (strict = false, init_seed = 5" in log
    assert "head.weight, head.bias" in log
    first = serve(built["warm"], tmp_path / "a", [[1.0, 2.0, 3.0, 4.0]])
    second = serve(built["warm"], tmp_path / "b", [[1.0, 2.0, 3.0, 4.0]])
    assert first == second


def test_inspect_shows_what_an_archive_serves(
    built: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert archive_main(["inspect", str(built["text"])]) == 0
    out = capsys.readouterr().out
    assert "text.mar: an archive serving WordAverage (text-classification)" in out
    assert "input (token ids): int64 [-1] (-1: any size), at most 9 elements" in out
    assert "padded with 1, lengths as 'lengths'" in out and "values in [0, 5]" in out
    assert "at most 9 tokens" in out and "embedding.weight" in out
    assert archive_main(["inspect", str(built["named"])]) == 0
    out = capsys.readouterr().out
    assert "input 'mask': float32 [-1] (-1: any size)" in out and "values in [0, 1]" in out
    assert archive_main(["inspect", str(built["generate"])]) == 0
    assert "method: generate with {'max_new_tokens': 4}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        ("generate", {"method": "sample"}, "Generator has no method 'sample'"),
        ("generate", {"method": "forward"}, "set `method` to one of its methods: generate"),
        ("dict", {"output": None}, "set `output` to the key or index"),
        ("dict", {"output": "scores"}, "has no key 'scores'"),
    ],
)
def test_the_gate_says_what_to_set(
    tmp_path: Path, name: str, change: dict[str, Any], message: str
) -> None:
    original = ENTRIES[name]
    ENTRIES[name] = {k: v for k, v in {**original, **change}.items() if v is not None}
    try:
        spec = project(tmp_path / "project", name)
    finally:
        ENTRIES[name] = original
    with pytest.raises(GateError, match=message.replace("(", r"\(")):
        build_models(spec, tmp_path / "store")
