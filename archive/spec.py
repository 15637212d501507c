"""The archive spec: ``models.toml``, one ``[[model]]`` table per archive, read into typed objects.

Every key is checked here, before anything is loaded: an unknown key or a value of the wrong
type is a SpecError naming the spec file, the model and the key. File names are relative to
the spec file. ``ModelSpec.handler_settings`` turns an entry into the handler's own
``HandlerSettings``, so the spec and the archive's model-config.yaml share one format.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from archive.errors import SpecError
from handlers.errors import SettingsError
from handlers.settings import HandlerSettings
from handlers.tasks import KINDS, TASK_KEYS
from handlers.tasks.text import DEFAULT_MAX_TOKENS

DEFAULT_SPEC = Path(__file__).with_name("models.toml")
# TorchServe's own rule is looser; this one also keeps names safe as file and URL parts.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"

PositiveInt = Annotated[int, Field(gt=0)]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Dtype = Literal["float32", "float64", "float16", "bfloat16", "int64", "int32", "uint8", "bool"]


class _Table(BaseModel):
    # strict: TOML already gives typed values, so "8" for 8 is a mistake, not something to coerce.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class InputTable(_Table):
    """``[model.input]``: one instance of the model's input, without the batch dimension."""

    shape: Annotated[list[int], Field(min_length=1)]
    dtype: Dtype = "float32"
    max_elements: PositiveInt | None = None
    pad_value: float | None = None
    lengths_arg: Identifier | None = None
    range: Annotated[list[float], Field(min_length=2, max_length=2)] | None = None

    @field_validator("shape")
    @classmethod
    def _sizes(cls, shape: list[int]) -> list[int]:
        if not all(size > 0 or size == -1 for size in shape):
            raise ValueError("sizes must be positive, or -1 for a dimension of any size")
        return shape


class NamedInputTable(InputTable):
    """One ``[[model.inputs]]`` table: a named input, passed to the model by keyword."""

    name: Identifier


class TextTable(_Table):
    """``[model.text]``: the vocabulary and how text becomes token ids."""

    vocab: Annotated[str, Field(min_length=1)]
    lowercase: bool = True
    unk_token: str | None = None
    pad_token: str | None = None
    max_tokens: PositiveInt = DEFAULT_MAX_TOKENS


class ImageTable(_Table):
    """``[model.image]``: how an image body becomes a ``[C, H, W]`` tensor."""

    mode: Literal["L", "RGB"]
    size: Annotated[list[PositiveInt], Field(min_length=2, max_length=2)]
    mean: list[float] | None = None
    std: list[float] | None = None


class ExampleTable(_Table):
    """One ``examples`` entry written as a table: a request body and its Content-Type."""

    file: Annotated[str, Field(min_length=1)]
    content_type: Annotated[str, Field(min_length=1)]


class ServingTable(_Table):
    """``[model.serving]``: TorchServe's batching and workers, sized for a 2-core CPU box."""

    # Delay 0: TorchServe hands the worker what is already queued and never waits (so at most
    # 2 requests: its loop stops once the delay is spent); behind the gateway, which batches
    # itself, that kept the worker busiest (`python -m bench`). TorchServe alone would read
    # 0 as 100 ms: the launcher and the gateway register with both values explicit.
    batch_size: PositiveInt = 2
    max_batch_delay_ms: Annotated[int, Field(ge=0)] = 0
    # Unset: the archive names no worker count, so whoever registers it decides
    # (TORCHSERVE_WORKERS_PER_MODEL, POST /models?initial_workers=). Set: minWorkers =
    # maxWorkers in model-config.yaml, which TorchServe keeps over both.
    workers: PositiveInt | None = None
    response_timeout_s: PositiveInt = 120


class ModelSpec(_Table):
    """One ``[[model]]`` table: the files, how to load them, and how to serve the model."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    version: Annotated[str, Field(pattern=VERSION_PATTERN)] = "1.0"
    model_file: Annotated[str, Field(pattern=r"\.py$")]
    model_class: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    checkpoint: Annotated[str, Field(min_length=1)]
    checkpoint_key: str | None = None
    strict: bool = True
    init_seed: Annotated[int, Field(ge=0)] = 0
    prepare: str | None = None
    task: Literal["tensor", "image-classification", "text-classification", "custom"]
    labels: str | None = None
    scores: Literal["logits", "probabilities"] = "logits"
    top_k: PositiveInt = 5
    input: InputTable | None = None
    inputs: Annotated[list[NamedInputTable], Field(min_length=1)] | None = None
    image: ImageTable | None = None
    text: TextTable | None = None
    method: Identifier = "forward"
    method_kwargs: dict[str, Any] = Field(default_factory=dict)
    output: str | int | None = None
    # "channels_last": 4-D weights and inputs laid out NHWC, faster for convolutions on the
    # CPU (handlers.memory_format); the gate proves the answers unchanged.
    memory_format: Literal["contiguous", "channels_last"] = "contiguous"
    # The user's decode/encode/setup (handlers.hooks) and the files they read, packed.
    hooks: Annotated[str, Field(pattern=r"\.py$")] | None = None
    extra_files: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    # Request bodies whose answers the archive records and replays at load (handlers.golden);
    # without them the gate's generated bodies are. A string's type comes from its extension.
    examples: list[Annotated[str, Field(min_length=1)] | ExampleTable] = Field(default_factory=list)
    tolerance: Annotated[float, Field(ge=0)] = 1e-4
    serving: ServingTable = Field(default_factory=ServingTable)

    @model_validator(mode="after")
    def _fits_task(self) -> ModelSpec:
        # Which keys a task reads is the task registry's (handlers.tasks.KINDS): a key the task
        # would ignore is an error, as a silently ignored setting is a bug report.
        if self.task not in KINDS:  # pragma: no cover - the Literal above lists them
            raise ValueError(f"unknown task {self.task!r}")
        try:
            self.handler_settings()
        except SettingsError as exc:
            raise ValueError(str(exc)) from None
        if self.task == "custom" and not self.examples:
            raise ValueError(
                "task 'custom' needs 'examples': request bodies its decode hook reads (the "
                "gate has no bodies of its own to send)"
            )
        if self.extra_files and self.hooks is None:
            raise ValueError("'extra_files' are read by hooks: set 'hooks' too")
        return self

    def handler_settings(self) -> HandlerSettings:
        """The handler's settings for this entry, file names as in the spec.

        Raises SettingsError when the handler would refuse them.
        """
        raw: dict[str, Any] = {
            "model_file": self.model_file,
            "model_class": self.model_class,
            "checkpoint": self.checkpoint,
            "task": self.task,
            "model_kwargs": dict(self.model_kwargs),
            "checkpoint_key": self.checkpoint_key,
            "strict": self.strict,
            "init_seed": self.init_seed,
            "method": self.method,
            "method_kwargs": dict(self.method_kwargs),
            "output": self.output,
            "memory_format": self.memory_format,
            "hooks": self.hooks,
            "extra_files": list(self.extra_files) or None,
        }
        # The task's own keys only as the spec gives them: the handler refuses those its task
        # does not read, and fills in the defaults of those it does.
        for key in TASK_KEYS & self.model_fields_set:
            value = getattr(self, key)
            # Tables as written (exclude_unset): the handler fills in its own defaults.
            if isinstance(value, BaseModel):
                value = value.model_dump(exclude_unset=True)
            elif isinstance(value, list):
                value = [v.model_dump(exclude_unset=True) for v in value]
            raw[key] = value
        return HandlerSettings.from_dict({k: v for k, v in raw.items() if v is not None})


@dataclass(frozen=True)
class Spec:
    """A parsed spec file: its path (file names in it are relative to its folder) and models."""

    path: Path
    models: tuple[ModelSpec, ...]

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def select(self, names: Sequence[str] = ()) -> list[ModelSpec]:
        """The entries named (all when none are), in the order given; SpecError for a stranger."""
        if not names:
            return list(self.models)
        by_name = {model.name: model for model in self.models}
        unknown = [name for name in names if name not in by_name]
        if unknown:
            raise SpecError(
                f"{self.path.name} has no model named {', '.join(map(repr, unknown))}; "
                f"models it defines: {', '.join(by_name) or '(none)'}"
            )
        return [by_name[name] for name in dict.fromkeys(names)]


def load_spec(path: Path = DEFAULT_SPEC) -> Spec:
    """Read and validate a spec file.

    Raises SpecError for an unreadable file, invalid TOML, an unknown top-level key, an invalid
    entry (naming the model and the key) or two entries with the same name.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(f"can't read the spec {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: invalid TOML: {exc}") from None
    return parse_spec(raw, path)


def parse_spec(raw: dict[str, Any], path: Path) -> Spec:
    """Validate the parsed TOML of the spec at ``path``; see ``load_spec``."""
    unknown = sorted(set(raw) - {"model"})
    if unknown:
        raise SpecError(
            f"{path}: unknown top-level key(s) {', '.join(unknown)}; models go in [[model]] tables"
        )
    tables = raw.get("model", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise SpecError(f"{path}: 'model' must be an array of tables, written [[model]]")
    models = tuple(_parse_model(table, index, path) for index, table in enumerate(tables))
    seen: set[str] = set()
    for model in models:
        if model.name in seen:
            raise SpecError(f"{path}: two models are named {model.name!r}")
        seen.add(model.name)
    return Spec(path.resolve(), models)


def _parse_model(table: dict[str, Any], index: int, path: Path) -> ModelSpec:
    name = table.get("name")
    label = f"model {name!r}" if isinstance(name, str) else f"model #{index + 1} (no valid name)"
    try:
        return ModelSpec.model_validate(table)
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        raise SpecError(f"{path}: {label}: {problems}") from None


def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown key {where!r}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
