"""models.toml: defaults, and errors that name the model and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from archive.errors import SpecError
from archive.spec import DEFAULT_SPEC, load_spec, parse_spec
from tests.unit.archive.helpers import image_entry, tensor_entry, write_spec


def parse(*entries: dict[str, Any]) -> Any:
    return parse_spec({"model": list(entries)}, Path("models.toml"))


def spec_error(*entries: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as caught:
        parse(*entries)
    return str(caught.value)


def test_defaults() -> None:
    (model,) = parse(tensor_entry(serving={})).models
    assert model.version == "1.0"
    assert model.strict is True
    assert model.checkpoint_key is None
    assert model.prepare is None
    assert model.model_kwargs == {}
    assert model.input is not None and model.input.dtype == "float32"
    serving = model.serving
    assert (serving.batch_size, serving.max_batch_delay_ms) == (2, 0)
    # No worker count: the archive leaves it to TORCHSERVE_WORKERS_PER_MODEL / initial_workers.
    assert (serving.workers, serving.response_timeout_s) == (None, 120)


def test_no_serving_table_means_defaults() -> None:
    entry = tensor_entry()
    del entry["serving"]
    assert parse(entry).models[0].serving.batch_size == 2


def test_handler_settings_carry_every_key() -> None:
    entry = image_entry(
        model_kwargs={"width": 3},
        checkpoint_key="ema",
        strict=False,
        scores="probabilities",
        top_k=1,
    )
    settings = parse(entry).models[0].handler_settings()
    assert settings.model_file == "model.py"
    assert settings.model_class == "TinyImage"
    assert settings.model_kwargs == {"width": 3}
    assert settings.checkpoint_key == "ema"
    assert settings.strict is False
    assert settings.labels == "labels.json"
    assert (settings.scores, settings.top_k) == ("probabilities", 1)
    assert settings.image is not None
    assert (settings.image.mode, settings.image.size) == ("L", (2, 2))
    assert (settings.image.mean, settings.image.std) == ((0.5,), (0.25,))


def test_tensor_input_dtype_reaches_the_handler() -> None:
    settings = parse(tensor_entry(input={"shape": [2, 3], "dtype": "int64"})).models[0]
    assert settings.handler_settings().input is not None
    assert settings.handler_settings().input.shape == (2, 3)  # type: ignore[union-attr]
    assert settings.handler_settings().input.dtype == "int64"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        (tensor_entry(colour="red"), "unknown key 'colour'"),
        (tensor_entry(serving={"threads": 2}), "unknown key 'serving.threads'"),
        (tensor_entry(input={"shape": [4], "layout": "NCHW"}), "unknown key 'input.layout'"),
    ],
)
def test_unknown_keys_name_model_and_key(entry: dict[str, Any], key: str) -> None:
    message = spec_error(entry)
    assert "model 'tiny'" in message
    assert key in message


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"serving": {"batch_size": "8"}}, "serving.batch_size"),
        ({"serving": {"batch_size": 0}}, "serving.batch_size"),
        ({"serving": {"workers": 1.5}}, "serving.workers"),
        ({"strict": "yes"}, "strict"),
        ({"version": 1}, "version"),
        ({"input": {"shape": [4.0]}}, "input.shape.0"),
        ({"input": {"shape": []}}, "input.shape"),
        ({"input": {"shape": [4], "dtype": "float8"}}, "input.dtype"),
        ({"model_kwargs": [1, 2]}, "model_kwargs"),
        ({"model_file": "model.txt"}, "model_file"),
        ({"model_class": "not a name"}, "model_class"),
        ({"task": "detection"}, "task"),
    ],
)
def test_wrong_types_name_model_and_key(override: dict[str, Any], key: str) -> None:
    message = spec_error(tensor_entry(**override))
    assert "model 'tiny'" in message
    assert f"{key}:" in message


@pytest.mark.parametrize("name", ["a", "A-b_9", "x" * 64, "digits-tensor"])
def test_valid_names(name: str) -> None:
    assert parse(tensor_entry(name)).models[0].name == name


@pytest.mark.parametrize("name", ["", "-lead", "_lead", "has space", "dot.name", "x" * 65, "é"])
def test_invalid_names(name: str) -> None:
    message = spec_error(tensor_entry(name))
    assert "name:" in message


def test_missing_name_is_named_by_position() -> None:
    entry = tensor_entry()
    del entry["name"]
    message = spec_error(tensor_entry("first"), entry)
    assert "model #2" in message and "name:" in message


def test_missing_required_key() -> None:
    entry = tensor_entry()
    del entry["checkpoint"]
    assert "checkpoint: Field required" in spec_error(entry)


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        (tensor_entry(input=None), "needs 'input' ([model.input]) or 'inputs'"),
        (image_entry(image=None), "needs 'image' ([model.image])"),
        (image_entry(input={"shape": [4]}), "does not use: input"),
        (tensor_entry(labels="labels.json"), "does not use: labels"),
        (tensor_entry(top_k=3), "does not use: top_k"),
        (image_entry(image={"mode": "L", "size": [2, 2], "std": [0.0]}), "non-zero"),
        (image_entry(image={"mode": "RGB", "size": [2, 2], "mean": [0.5, 0.5]}), "image.mean"),
    ],
)
def test_keys_must_fit_the_task(entry: dict[str, Any], needle: str) -> None:
    entry = {k: v for k, v in entry.items() if v is not None}
    assert needle in spec_error(entry)


def test_duplicate_names() -> None:
    assert "two models are named 'tiny'" in spec_error(tensor_entry(), tensor_entry())


def test_unknown_top_level_key() -> None:
    with pytest.raises(SpecError, match="unknown top-level key"):
        parse_spec({"models": []}, Path("models.toml"))


def test_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text("[[model]]\nname = \n")
    with pytest.raises(SpecError, match="invalid TOML"):
        load_spec(path)


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="can't read the spec"):
        load_spec(tmp_path / "absent.toml")


def test_select_by_name(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path / "models.toml", [tensor_entry("a"), tensor_entry("b")]))
    assert [m.name for m in spec.select()] == ["a", "b"]
    assert [m.name for m in spec.select(["b", "a", "b"])] == ["b", "a"]
    assert spec.base_dir == tmp_path.resolve()
    with pytest.raises(SpecError, match="no model named 'c'; models it defines: a, b"):
        spec.select(["c"])


def test_the_projects_spec_is_valid_and_matches_the_digits_training() -> None:
    from examples.digits import data

    models = {model.name: model for model in load_spec(DEFAULT_SPEC).models}
    assert set(models) == {"digits", "digits-tensor", "sentiment"}
    digits = models["digits"]
    assert digits.image is not None
    assert (digits.image.mean, digits.image.std) == ([data.MEAN], [data.STD])
    assert digits.task == "image-classification"
    assert models["digits-tensor"].input is not None
    assert models["digits-tensor"].input.shape == [1, 8, 8]
    for model in models.values():
        assert (DEFAULT_SPEC.parent / model.model_file).is_file()
        assert model.prepare is not None and (DEFAULT_SPEC.parent / model.prepare).is_file()


def test_the_text_example_matches_its_training_and_the_handlers_tokeniser() -> None:
    from examples.text import data
    from handlers.tasks.text import TOKEN

    (sentiment,) = load_spec(DEFAULT_SPEC).select(["sentiment"])
    vocab = data.build_vocab(data.load_split().train_texts)
    assert sentiment.model_kwargs["vocab_size"] == len(vocab)
    assert sentiment.model_kwargs["pad_idx"] == vocab[data.PAD]
    assert sentiment.text is not None
    assert (sentiment.text.unk_token, sentiment.text.pad_token) == (data.UNK, data.PAD)
    assert data.TOKEN.pattern == TOKEN.pattern
