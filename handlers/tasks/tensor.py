"""``tensor``: arrays in, the model's output out as nested lists.

One input (``input``): a JSON nested list or a ``.npy`` body, passed to the model positionally.
Named inputs (``inputs``): a JSON object ``{name: nested list}`` or an ``.npz`` body, passed as
keyword arguments. The answer is the model's output (a tensor, or a tuple/list/dict of
batch-first tensors: each request gets its row of each, in the same structure), or the part
``output`` names.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from handlers.decoding import decode_array, decode_named
from handlers.inputs import Call, InputSpec, Instance, check_padding, collate
from handlers.tasks.base import (
    TaskKind,
    check_finite,
    is_batch_first,
    plain_rows,
    select_output,
    to_plain,
)

if TYPE_CHECKING:
    from handlers.settings import HandlerSettings


class TensorTask:
    """Arrays in (one positional input, or named ones), the model's output out as lists."""

    def __init__(
        self, specs: InputSpec | Sequence[InputSpec], output: str | int | None = None
    ) -> None:
        self.specs = (specs,) if isinstance(specs, InputSpec) else tuple(specs)
        self.named = any(spec.name is not None for spec in self.specs)
        self.output = output

    @property
    def spec(self) -> InputSpec:
        """The one input of an unnamed-input model."""
        return self.specs[0]

    def decode(self, payload: Any) -> Instance:
        if self.named:
            return decode_named(payload, self.specs)
        return {self.spec.key: decode_array(payload, self.spec)}

    def collate(self, instances: Sequence[Instance]) -> list[Call]:
        return collate(instances, self.specs)

    def encode(self, output: Any) -> Any:
        return to_plain(select_output(output, self.output))

    def encode_rows(self, output: Any, count: int) -> list[Any] | None:
        try:
            chosen = select_output(output, self.output)
        except ValueError:
            return None  # encode() says why, for each request
        if not is_batch_first(chosen, count):
            return None
        return plain_rows(chosen, count)

    def example_payloads(self, generator: np.random.Generator) -> list[Any]:
        # Two instances of different sizes along the variable dimensions (2 and 3).
        instances = [
            {spec.key: example_array(spec, generator, size) for spec in self.specs}
            for size in (2, 3)
        ]
        # TorchServe JSON-decodes application/json bodies; other bodies arrive as bytes.
        # Sizes alternate, so a batch of two already holds two shapes.
        if self.named:
            return [{k: v.tolist() for k, v in i.items()} for i in instances] + [
                npz_bytes(dict(i)) for i in instances
            ]
        arrays = [instance[self.spec.key] for instance in instances]
        if not self.spec.variable_dims:
            arrays = arrays[:1]
        return [array.tolist() for array in arrays] + [npy_bytes(array) for array in arrays]

    def check_answer(self, answer: Any) -> None:
        check_finite(answer)


def example_array(
    spec: InputSpec, generator: np.random.Generator, size: int
) -> np.ndarray[Any, Any]:
    """A random instance of ``spec`` (``size`` along its variable dimensions, as far as
    ``max_elements`` allows), within ``range`` when it has one."""
    fixed = int(np.prod([d for d in spec.shape if d != -1]))
    variable = len(spec.variable_dims)
    while variable and size > 1 and fixed * size**variable > spec.element_limit:
        size -= 1
    shape = tuple(size if d == -1 else d for d in spec.shape)
    integral = spec.dtype in ("int64", "int32", "uint8", "bool")
    array: np.ndarray[Any, Any]
    if spec.range is not None:
        low, high = spec.range
        if integral:
            array = generator.integers(int(np.ceil(low)), int(np.floor(high)) + 1, shape)
        else:
            array = generator.uniform(low, high, shape)
    elif integral:
        array = generator.integers(0, 2, shape)
    else:
        array = generator.standard_normal(shape)
    return array.astype(bool if spec.dtype == "bool" else numpy_dtype(spec.dtype))


def numpy_dtype(dtype: str) -> str:
    # numpy has no bfloat16: such bodies are sent as float32.
    return "float32" if dtype == "bfloat16" else dtype


def npy_bytes(array: np.ndarray[Any, Any]) -> bytearray:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return bytearray(buffer.getvalue())


def npz_bytes(arrays: dict[str, np.ndarray[Any, Any]]) -> bytearray:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return bytearray(buffer.getvalue())


def _build(settings: HandlerSettings, base_dir: Path) -> TensorTask:
    specs = settings.inputs if settings.inputs is not None else (settings.input,)
    assert all(spec is not None for spec in specs)
    return TensorTask([spec for spec in specs if spec is not None], settings.output)


def _validate(settings: HandlerSettings) -> None:
    if settings.input is not None:
        check_padding(settings.input, "input")
    for index, spec in enumerate(settings.inputs or ()):
        check_padding(spec, f"inputs[{index}]")


KIND = TaskKind(
    name="tensor",
    uses=frozenset({"input", "inputs"}),
    needs=(("input", "inputs"),),
    build=_build,
    validate=_validate,
)
