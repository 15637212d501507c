"""The handler's settings, as they appear under ``handler:`` in an archive's model-config.yaml.

TorchServe hands the parsed YAML to the handler as ``context.model_yaml_config``. The build
step writes this section from the spec (``archive/models.toml``); ``to_dict`` and
``from_dict`` are inverse, so the archive and the handler agree on one format. Plain
dataclasses, not pydantic: this package must run on a stock TorchServe with only torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from handlers.errors import SettingsError

TASKS = ("tensor", "image-classification")
DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "uint8", "bool")
IMAGE_MODES = ("L", "RGB")
SCORES = ("logits", "probabilities")


@dataclass(frozen=True)
class InputSpec:
    """One instance of the model's input, without the batch dimension."""

    shape: tuple[int, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class ImageSpec:
    """How an image body becomes a tensor: mode, size [h, w], normalisation per channel."""

    mode: str = "RGB"
    size: tuple[int, int] = (224, 224)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3


@dataclass(frozen=True)
class HandlerSettings:
    """Everything the generic handler needs to rebuild and run one model."""

    model_file: str
    model_class: str
    checkpoint: str
    task: str = "tensor"
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    checkpoint_key: str | None = None
    strict: bool = True
    input: InputSpec | None = None
    image: ImageSpec | None = None
    labels: str | None = None
    scores: str = "logits"
    top_k: int = 5

    @property
    def instance_shape(self) -> tuple[int, ...]:
        """The shape of one decoded instance, whatever the task."""
        if self.task == "image-classification" and self.image is not None:
            return (self.image.channels, *self.image.size)
        assert self.input is not None
        return self.input.shape

    def to_dict(self) -> dict[str, Any]:
        """The YAML-ready form (lists, not tuples; no None values)."""
        raw = asdict(self)
        raw["model_kwargs"] = dict(self.model_kwargs)
        plain: dict[str, Any] = _plain({k: v for k, v in raw.items() if v is not None})
        return plain

    @classmethod
    def from_dict(cls, raw: Any) -> HandlerSettings:
        """Validate ``raw`` (the ``handler:`` section); SettingsError names the bad key."""
        if not isinstance(raw, Mapping):
            raise SettingsError("model-config.yaml has no 'handler:' section")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise SettingsError(f"unknown handler setting(s): {', '.join(unknown)}")
        for required in ("model_file", "model_class", "checkpoint"):
            if not isinstance(raw.get(required), str) or not raw[required]:
                raise SettingsError(
                    f"handler setting {required!r} is required (a non-empty string)"
                )
        task = _choice(raw, "task", TASKS, "tensor")
        kwargs = raw.get("model_kwargs") or {}
        if not isinstance(kwargs, Mapping):
            raise SettingsError("handler setting 'model_kwargs' must be a mapping")
        key: str | None = raw.get("checkpoint_key")
        if key is not None and not isinstance(key, str):
            raise SettingsError("handler setting 'checkpoint_key' must be a string")
        strict = raw.get("strict", True)
        if not isinstance(strict, bool):
            raise SettingsError("handler setting 'strict' must be true or false")
        input_spec = _input_spec(raw.get("input"))
        image_spec = _image_spec(raw.get("image"))
        if task == "tensor" and input_spec is None:
            raise SettingsError("task 'tensor' needs 'input' with a 'shape'")
        if task == "image-classification" and image_spec is None:
            raise SettingsError("task 'image-classification' needs an 'image' section")
        labels = raw.get("labels")
        if labels is not None and not isinstance(labels, str):
            raise SettingsError("handler setting 'labels' must be a file name")
        top_k = raw.get("top_k", 5)
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise SettingsError("handler setting 'top_k' must be a positive integer")
        return cls(
            model_file=raw["model_file"],
            model_class=raw["model_class"],
            checkpoint=raw["checkpoint"],
            task=task,
            model_kwargs=dict(kwargs),
            checkpoint_key=key,
            strict=strict,
            input=input_spec,
            image=image_spec,
            labels=labels,
            scores=_choice(raw, "scores", SCORES, "logits"),
            top_k=top_k,
        )


def _input_spec(raw: Any) -> InputSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or set(raw) - {"shape", "dtype"}:
        raise SettingsError("handler setting 'input' takes 'shape' and 'dtype'")
    shape = _int_list(raw.get("shape"), "input.shape")
    return InputSpec(tuple(shape), _choice(raw, "dtype", DTYPES, "float32", "input."))


def _image_spec(raw: Any) -> ImageSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or set(raw) - {"mode", "size", "mean", "std"}:
        raise SettingsError("handler setting 'image' takes 'mode', 'size', 'mean' and 'std'")
    mode = _choice(raw, "mode", IMAGE_MODES, "RGB", "image.")
    size = _int_list(raw.get("size", [224, 224]), "image.size")
    if len(size) != 2:
        raise SettingsError("handler setting 'image.size' must be [height, width]")
    channels = 1 if mode == "L" else 3
    mean = _float_list(raw.get("mean", [0.0] * channels), "image.mean")
    std = _float_list(raw.get("std", [1.0] * channels), "image.std")
    for name, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise SettingsError(f"'image.{name}' needs 1 or {channels} values for mode {mode}")
    if any(s == 0 for s in std):
        raise SettingsError("'image.std' values must be non-zero")
    return ImageSpec(mode, (size[0], size[1]), tuple(mean), tuple(std))


def _choice(
    raw: Mapping[str, Any], key: str, allowed: Sequence[str], default: str, at: str = ""
) -> str:
    value = raw.get(key, default)
    if value not in allowed:
        raise SettingsError(f"handler setting '{at}{key}' must be one of {', '.join(allowed)}")
    return str(value)


def _int_list(value: Any, name: str) -> list[int]:
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or not value
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise SettingsError(f"handler setting '{name}' must be a list of positive integers")
    return list(value)


def _float_list(value: Any, name: str) -> list[float]:
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise SettingsError(f"handler setting '{name}' must be a list of numbers")
    return [float(v) for v in value]


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
