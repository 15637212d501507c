from typing import Any

import pytest

from handlers.errors import SettingsError
from handlers.settings import HandlerSettings, ImageSpec, InputSpec

BASE: dict[str, Any] = {"model_file": "model.py", "model_class": "Net", "checkpoint": "w.pt"}


def test_tensor_settings_round_trip() -> None:
    raw = {**BASE, "task": "tensor", "input": {"shape": [1, 28, 28]}, "model_kwargs": {"k": 2}}
    settings = HandlerSettings.from_dict(raw)
    assert settings.input == InputSpec((1, 28, 28), "float32")
    assert settings.instance_shape == (1, 28, 28)
    assert HandlerSettings.from_dict(settings.to_dict()) == settings


def test_image_settings_defaults_and_shape() -> None:
    raw = {**BASE, "task": "image-classification", "image": {"mode": "L", "size": [8, 8]}}
    settings = HandlerSettings.from_dict(raw)
    assert settings.image == ImageSpec("L", (8, 8), (0.0,), (1.0,))
    assert settings.instance_shape == (1, 8, 8)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_file": None}, "'model_file' is required"),
        ({"surprise": 1}, "unknown handler setting.*surprise"),
        ({"task": "llm"}, "'task' must be one of"),
        ({"strict": "yes"}, "'strict' must be true or false"),
        ({"input": {"shape": [0, 2]}}, "'input.shape' must be a list of positive integers or -1"),
        ({"input": {"shape": [2], "dtype": "complex"}}, "'input.dtype' must be one of"),
        ({"input": None}, "task 'tensor' needs 'input'"),
        ({"input": None, "task": "image-classification", "image": {"size": [8]}}, "height, width"),
        ({"input": None, "task": "image-classification", "image": {"std": [0]}}, "non-zero"),
        ({"input": None, "task": "image-classification", "image": {"mean": [0, 0]}}, "1 or 3"),
        ({"top_k": 0}, "task 'tensor' does not use: top_k"),
        ({"input": None, "task": "image-classification", "image": {}, "top_k": 0}, "'top_k'"),
    ],
)
def test_invalid_settings_name_the_key(change: dict[str, Any], message: str) -> None:
    raw = {**BASE, "input": {"shape": [4]}, **change}
    with pytest.raises(SettingsError, match=message):
        HandlerSettings.from_dict(raw)


def test_missing_section() -> None:
    with pytest.raises(SettingsError, match="no 'handler:' section"):
        HandlerSettings.from_dict(None)
