"""A model's inputs and outputs as the protocol describes them, from its archive's settings.

Read from the `handler:` section of the archive's model-config.yaml
(`service.archive_config.handler_section`), the settings the handler itself runs on:
- `task: tensor` with `input: {shape, dtype}`: one input, called `input`, or `input.name`;
  with `inputs: [{name, shape, dtype}, ...]`: one input per entry. Shapes are per instance;
  `-1` is a dimension of any size. One output, `output`: the handler answers JSON numbers,
  sent back as FP32; the archive does not record its shape, so it is `[-1, -1]` (every
  instance's answer carries its real shape).
- `task: image-classification` / `text-classification`: one BYTES input, `image` (PNG or
  JPEG bytes) or `text` (UTF-8), one element per instance; outputs `probabilities` (FP32)
  and `labels` (BYTES), `[-1, top_k]`, most likely first.

Metadata shapes put `-1` in front for the batch dimension: a request's first dimension is
its number of instances.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.protocols.oip.tensors import FROM_HANDLER_DTYPE

TENSOR = "tensor"
IMAGE_CLASSIFICATION = "image-classification"
TEXT_CLASSIFICATION = "text-classification"
CLASSIFIERS = (IMAGE_CLASSIFICATION, TEXT_CLASSIFICATION)
DEFAULT_TOP_K = 5  # the handler's default (handlers/settings.py)
PROBABILITIES, LABELS, OUTPUT = "probabilities", "labels", "output"


class SignatureUnavailable(ValueError):
    """The archive's settings do not describe the model's inputs (not this project's handler,
    or a task this gateway does not know)."""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output: its name, datatype and shape per instance (no batch dimension)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def metadata(self) -> dict[str, Any]:
        """The spec's `$metadata_tensor`, with -1 for the batch dimension."""
        return {"name": self.name, "datatype": self.datatype, "shape": [-1, *self.shape]}


@dataclass(frozen=True, slots=True)
class ModelSignature:
    """What a model takes and answers; `named`: instances go as `.npz` (named inputs)."""

    task: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    top_k: int | None = None
    named: bool = False

    @property
    def is_classifier(self) -> bool:
        return self.task in CLASSIFIERS


def signature_from_handler(section: Mapping[str, Any]) -> ModelSignature:
    """The signature the `handler:` section describes; `SignatureUnavailable` if none."""
    task = section.get("task", TENSOR)
    if task in CLASSIFIERS:
        top_k = section.get("top_k", DEFAULT_TOP_K)
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise SignatureUnavailable("the archive's top_k is not a positive integer")
        name = "image" if task == IMAGE_CLASSIFICATION else "text"
        return ModelSignature(
            task=task,
            inputs=(TensorSpec(name, "BYTES", ()),),
            outputs=(
                TensorSpec(PROBABILITIES, "FP32", (top_k,)),
                TensorSpec(LABELS, "BYTES", (top_k,)),
            ),
            top_k=top_k,
        )
    if task != TENSOR:
        raise SignatureUnavailable(f"the archive's task {task!r} is not one the gateway knows")
    output = (TensorSpec(OUTPUT, "FP32", (-1,)),)
    named = section.get("inputs")
    if isinstance(named, list) and named:
        inputs = tuple(_input(entry, None) for entry in named)
        if len({spec.name for spec in inputs}) != len(inputs):
            raise SignatureUnavailable("the archive's inputs have duplicate names")
        return ModelSignature(TENSOR, inputs, output, named=True)
    single = section.get("input")
    if not isinstance(single, Mapping):
        raise SignatureUnavailable("the archive's settings describe no input")
    return ModelSignature(TENSOR, (_input(single, "input"),), output)


def _input(entry: Any, default_name: str | None) -> TensorSpec:
    if not isinstance(entry, Mapping):
        raise SignatureUnavailable("an input of the archive's settings is not a mapping")
    name = entry.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise SignatureUnavailable("an input of the archive's settings has no name")
    dtype = entry.get("dtype", "float32")
    datatype = FROM_HANDLER_DTYPE.get(dtype) if isinstance(dtype, str) else None
    if datatype is None:
        raise SignatureUnavailable(f"input {name!r} has a dtype the gateway does not know")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and (d > 0 or d == -1) for d in shape
    ):
        raise SignatureUnavailable(f"input {name!r} has no valid shape")
    return TensorSpec(name, datatype, tuple(shape))
