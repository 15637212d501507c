"""The handler's settings, as they appear under ``handler:`` in an archive's model-config.yaml.

TorchServe hands the parsed YAML to the handler as ``context.model_yaml_config``. The build
step writes this section from the spec (``archive/models.toml``); ``to_dict`` and
``from_dict`` are inverse, so the archive and the handler agree on one format. Plain
dataclasses, not pydantic: this package must run on a stock TorchServe with only torch.

Each task's own sections (``input``/``inputs``, ``image``, ``text``) are parsed by the module
that uses them; which settings a task reads and needs is the task registry's
(``handlers.tasks.KINDS``), so a setting a task would ignore is refused here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from handlers.errors import SettingsError
from handlers.inputs import IDENTIFIER, InputSpec, parse_input, parse_inputs
from handlers.memory_format import DEFAULT_MEMORY_FORMAT, MEMORY_FORMATS
from handlers.tasks import KINDS, TASK_KEYS
from handlers.tasks.base import SCORES
from handlers.tasks.image import ImageSpec, parse_image
from handlers.tasks.text import TextSpec, parse_text

TASKS = tuple(KINDS)
DEFAULT_METHOD = "forward"

__all__ = ["HandlerSettings", "ImageSpec", "InputSpec", "TextSpec"]


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
    # Seeds the class's own initialisation of what a strict = false checkpoint lacks.
    init_seed: int = 0
    input: InputSpec | None = None
    inputs: tuple[InputSpec, ...] | None = None
    image: ImageSpec | None = None
    text: TextSpec | None = None
    labels: str | None = None
    scores: str = "logits"
    top_k: int = 5
    method: str = DEFAULT_METHOD
    method_kwargs: Mapping[str, Any] = field(default_factory=dict)
    output: str | int | None = None
    # The layout of the model's 4-D weights and inputs (handlers.memory_format).
    memory_format: str = DEFAULT_MEMORY_FORMAT
    # The user's hooks file (handlers.hooks) and the files it reads, relative to the archive.
    hooks: str | None = None
    extra_files: tuple[str, ...] | None = None

    @property
    def instance_shape(self) -> tuple[int, ...]:
        """The shape of one decoded instance of a one-input task (image or tensor)."""
        if self.image is not None:
            return self.image.input.shape
        assert self.input is not None
        return self.input.shape

    def to_dict(self) -> dict[str, Any]:
        """The YAML-ready form (lists, not tuples; no None values; only the settings of
        TASK_KEYS that the task reads)."""
        raw = asdict(self)
        raw["model_kwargs"] = dict(self.model_kwargs)
        raw["method_kwargs"] = dict(self.method_kwargs)
        unused = TASK_KEYS - KINDS[self.task].uses
        plain: dict[str, Any] = _plain(
            {k: v for k, v in raw.items() if v is not None and k not in unused}
        )
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
        kind = KINDS[task]
        given = {key for key in TASK_KEYS if raw.get(key) is not None}
        ignored = sorted(given - kind.uses)
        if ignored:
            raise SettingsError(f"task {task!r} does not use: {', '.join(ignored)}")
        for alternatives in kind.needs:
            if not given & set(alternatives):
                wanted = " or ".join(f"'{key}' ({_toml_table(key)})" for key in alternatives)
                raise SettingsError(f"task {task!r} needs {wanted}")
        if {"input", "inputs"} <= given:
            raise SettingsError("'input' and 'inputs' exclude each other: use one")
        key: str | None = raw.get("checkpoint_key")
        if key is not None and not isinstance(key, str):
            raise SettingsError("handler setting 'checkpoint_key' must be a string")
        labels = raw.get("labels")
        if labels is not None and not isinstance(labels, str):
            raise SettingsError("handler setting 'labels' must be a file name")
        settings = cls(
            model_file=raw["model_file"],
            model_class=raw["model_class"],
            checkpoint=raw["checkpoint"],
            task=task,
            model_kwargs=_mapping(raw, "model_kwargs"),
            checkpoint_key=key,
            strict=_bool(raw, "strict", True),
            init_seed=_int(raw, "init_seed", 0, minimum=0),
            input=(
                parse_input(raw["input"], "input", default_dtype=kind.default_dtype)
                if "input" in given
                else None
            ),
            inputs=parse_inputs(raw["inputs"]) if "inputs" in given else None,
            image=parse_image(raw["image"]) if "image" in given else None,
            text=parse_text(raw["text"]) if "text" in given else None,
            labels=labels,
            scores=_choice(raw, "scores", SCORES, "logits"),
            top_k=_int(raw, "top_k", 5, minimum=1),
            method=_method(raw),
            method_kwargs=_mapping(raw, "method_kwargs"),
            output=_output(raw),
            memory_format=_choice(
                raw, "memory_format", tuple(MEMORY_FORMATS), DEFAULT_MEMORY_FORMAT
            ),
            hooks=_hooks(raw),
            extra_files=_extra_files(raw),
        )
        kind.validate(settings)
        return settings


def _toml_table(key: str) -> str:
    return f"[[model.{key}]]" if key == "inputs" else f"[model.{key}]"


def _choice(raw: Mapping[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = raw.get(key, default)
    if value not in allowed:
        raise SettingsError(f"handler setting '{key}' must be one of {', '.join(allowed)}")
    return str(value)


def _mapping(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, Mapping):
        raise SettingsError(f"handler setting '{key}' must be a mapping")
    return dict(value)


def _bool(raw: Mapping[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise SettingsError(f"handler setting '{key}' must be true or false")
    return value


def _int(raw: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise SettingsError(f"handler setting '{key}' must be {kind}")
    return value


def _method(raw: Mapping[str, Any]) -> str:
    value = raw.get("method", DEFAULT_METHOD)
    if not isinstance(value, str) or not IDENTIFIER.match(value) or value.startswith("__"):
        raise SettingsError("handler setting 'method' must be the name of a method of the model")
    return value


def _output(raw: Mapping[str, Any]) -> str | int | None:
    value = raw.get("output")
    if (
        value is None
        or isinstance(value, str)
        or (isinstance(value, int) and not isinstance(value, bool))
    ):
        return value
    raise SettingsError("handler setting 'output' must be a key (string) or an index (integer)")


def _hooks(raw: Mapping[str, Any]) -> str | None:
    value = raw.get("hooks")
    if value is None or (isinstance(value, str) and value.endswith(".py")):
        return value
    raise SettingsError("handler setting 'hooks' must be the name of a Python file (.py)")


def _extra_files(raw: Mapping[str, Any]) -> tuple[str, ...] | None:
    value = raw.get("extra_files")
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise SettingsError("handler setting 'extra_files' must be a list of file names")
    return tuple(value)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
