"""A model's inputs: what one instance may be, and how a batch of instances becomes calls.

An ``InputSpec`` is one input of one instance, without the batch dimension. A ``-1`` in its
shape is a dimension of any size (at least 1); ``max_elements`` bounds what one request may
send. ``collate`` turns the decoded instances of a batch into the model calls that answer
them: one call per distinct shape, so each answer is exactly what the request would get
alone; or, for inputs with ``pad_value`` and ``lengths_arg``, one call with the instances
padded to the longest and their true lengths passed as the keyword argument ``lengths_arg``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from handlers.errors import RequestError, SettingsError

DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "uint8", "bool")
DEFAULT_MAX_ELEMENTS = 1_048_576
# The one unnamed input ([model.input]) is passed positionally; named ones as keywords.
POSITIONAL = ""
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# An instance: its tensors by input name (POSITIONAL for the one unnamed input).
Instance = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class InputSpec:
    """One input of one instance: shape (``-1``: any size), dtype and the bounds on a request."""

    shape: tuple[int, ...]
    dtype: str = "float32"
    # None: DEFAULT_MAX_ELEMENTS (kept None so model-config.yaml only holds what was set).
    max_elements: int | None = None
    pad_value: float | None = None
    lengths_arg: str | None = None
    range: tuple[float, float] | None = None
    name: str | None = None

    @property
    def key(self) -> str:
        """The instance key (and keyword argument) of this input."""
        return self.name if self.name is not None else POSITIONAL

    @property
    def variable_dims(self) -> tuple[int, ...]:
        return tuple(i for i, size in enumerate(self.shape) if size == -1)

    @property
    def padded(self) -> bool:
        """Padded to the batch's longest (with the lengths passed) rather than grouped by shape."""
        return self.pad_value is not None and self.lengths_arg is not None

    @property
    def element_limit(self) -> int:
        return self.max_elements if self.max_elements is not None else DEFAULT_MAX_ELEMENTS

    def describe(self) -> str:
        """``float32 array of shape [-1, 8]`` (what the error messages say was expected)."""
        text = f"{self.dtype} array of shape {list(self.shape)}"
        if self.variable_dims:
            text += " (-1: any size)"
        return text if self.name is None else f"{text} for {self.name!r}"

    def check(self, shape: Sequence[int]) -> None:
        """RequestError unless an instance of ``shape`` fits this input."""
        fits = len(shape) == len(self.shape) and all(
            (want == -1 and got >= 1) or want == got
            for want, got in zip(self.shape, shape, strict=True)
        )
        if not fits:
            raise RequestError(f"expected a {self.describe()}; got shape {list(shape)}")
        elements = int(np.prod(shape)) if shape else 1
        if elements > self.element_limit:
            raise RequestError(
                f"expected a {self.describe()} of at most {self.element_limit:,} elements; "
                f"got {elements:,}"
            )

    def check_range(self, array: np.ndarray[Any, Any]) -> None:
        """RequestError naming the range when a value of ``array`` lies outside it."""
        if self.range is None or array.size == 0:
            return
        low, high = self.range
        smallest, largest = array.min(), array.max()
        if smallest < low or largest > high:
            bad = smallest if smallest < low else largest
            where = f" of {self.name!r}" if self.name is not None else ""
            raise RequestError(
                f"values{where} must lie in [{_number(low)}, {_number(high)}]; got {_number(bad)}"
            )


def parse_input(
    raw: Any, at: str, *, named: bool = False, default_dtype: str = "float32"
) -> InputSpec:
    """The ``InputSpec`` of the handler setting at ``at`` (``input`` or ``inputs[i]``).

    Raises SettingsError naming the key.
    """
    keys = {"shape", "dtype", "max_elements", "pad_value", "lengths_arg", "range"}
    if named:
        keys.add("name")
    if not isinstance(raw, Mapping) or set(raw) - keys:
        raise SettingsError(f"handler setting '{at}' takes {', '.join(sorted(keys))}")
    shape = raw.get("shape")
    if (
        not isinstance(shape, Sequence)
        or isinstance(shape, str)
        or not shape
        or not all(_is_int(v) and (v > 0 or v == -1) for v in shape)
    ):
        raise SettingsError(
            f"handler setting '{at}.shape' must be a list of positive integers or -1"
        )
    dtype = raw.get("dtype", default_dtype)
    if dtype not in DTYPES:
        raise SettingsError(f"handler setting '{at}.dtype' must be one of {', '.join(DTYPES)}")
    limit = raw.get("max_elements")
    if limit is not None and not (_is_int(limit) and limit > 0):
        raise SettingsError(f"handler setting '{at}.max_elements' must be a positive integer")
    pad_value = raw.get("pad_value")
    if pad_value is not None and not _is_number(pad_value):
        raise SettingsError(f"handler setting '{at}.pad_value' must be a number")
    lengths_arg = raw.get("lengths_arg")
    if lengths_arg is not None and not (
        isinstance(lengths_arg, str) and IDENTIFIER.match(lengths_arg)
    ):
        raise SettingsError(f"handler setting '{at}.lengths_arg' must be a Python identifier")
    if lengths_arg is not None and -1 not in shape:
        raise SettingsError(f"'{at}.lengths_arg' needs a variable dimension (-1) in its shape")
    bounds = raw.get("range")
    if bounds is not None and not (
        isinstance(bounds, Sequence)
        and len(bounds) == 2
        and all(_is_number(v) for v in bounds)
        and bounds[0] <= bounds[1]
    ):
        raise SettingsError(f"handler setting '{at}.range' must be [min, max] with min <= max")
    name = raw.get("name")
    if named and not (isinstance(name, str) and IDENTIFIER.match(name)):
        raise SettingsError(f"handler setting '{at}.name' must be a Python identifier")
    return InputSpec(
        shape=tuple(shape),
        dtype=str(dtype),
        max_elements=limit,
        pad_value=None if pad_value is None else float(pad_value),
        lengths_arg=lengths_arg,
        range=None if bounds is None else (float(bounds[0]), float(bounds[1])),
        name=name if named else None,
    )


def check_padding(spec: InputSpec, at: str) -> None:
    """SettingsError unless ``pad_value`` and ``lengths_arg`` are both set or both unset:
    padding without the true lengths would change the answers."""
    if (spec.pad_value is None) != (spec.lengths_arg is None):
        raise SettingsError(
            f"handler settings '{at}.pad_value' and '{at}.lengths_arg' go together: padding "
            "without the true lengths would change the answers"
        )


def parse_inputs(raw: Any) -> tuple[InputSpec, ...]:
    """The named inputs of the handler setting ``inputs``; SettingsError names the bad key."""
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raise SettingsError("handler setting 'inputs' must be a non-empty list of inputs")
    specs = tuple(parse_input(item, f"inputs[{i}]", named=True) for i, item in enumerate(raw))
    names = [spec.key for spec in specs]
    taken = names + [spec.lengths_arg for spec in specs if spec.lengths_arg is not None]
    duplicates = sorted({n for n in taken if taken.count(n) > 1})
    if duplicates:
        raise SettingsError(f"'inputs' use these names twice: {', '.join(duplicates)}")
    return specs


@dataclass
class Call:
    """One model call of a batch: the instances it answers (by position) and its arguments."""

    rows: list[int]
    args: tuple[torch.Tensor, ...] = ()
    kwargs: dict[str, torch.Tensor] = field(default_factory=dict)

    def to(self, device: torch.device) -> Call:
        return Call(
            self.rows,
            tuple(t.to(device, non_blocking=True) for t in self.args),
            {k: t.to(device, non_blocking=True) for k, t in self.kwargs.items()},
        )


def collate(instances: Sequence[Instance], specs: Sequence[InputSpec]) -> list[Call]:
    """The calls that answer ``instances``: one per distinct shape of the inputs that are not
    padded (in order of first appearance), the padded inputs padded within each call."""
    groups: dict[tuple[tuple[int, ...], ...], list[int]] = {}
    grouped = [spec.key for spec in specs if not spec.padded]
    for index, instance in enumerate(instances):
        signature = tuple(tuple(instance[key].shape) for key in grouped)
        groups.setdefault(signature, []).append(index)
    calls = []
    for rows in groups.values():
        call = Call(rows)
        for spec in specs:
            parts = [instances[i][spec.key] for i in rows]
            if spec.padded:
                batch, lengths = pad(parts, spec)
                assert spec.lengths_arg is not None
                call.kwargs[spec.lengths_arg] = lengths
            else:
                batch = torch.stack(parts)
            if spec.key == POSITIONAL:
                call.args = (batch,)
            else:
                call.kwargs[spec.key] = batch
        calls.append(call)
    return calls


def pad(parts: Sequence[torch.Tensor], spec: InputSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """``parts`` padded with ``spec.pad_value`` to the longest along the variable dimensions,
    stacked; and their true lengths, int64 ``[batch]`` (or ``[batch, dims]`` for several)."""
    dims = spec.variable_dims
    sizes = torch.tensor([[part.shape[d] for d in dims] for part in parts], dtype=torch.int64)
    longest = sizes.max(dim=0).values.tolist()
    shape = list(parts[0].shape)
    for d, size in zip(dims, longest, strict=True):
        shape[d] = size
    assert spec.pad_value is not None
    batch = torch.full((len(parts), *shape), spec.pad_value, dtype=parts[0].dtype)
    for row, part in enumerate(parts):
        index: tuple[int | slice, ...] = (row, *(slice(0, n) for n in part.shape))
        batch[index] = part
    lengths = sizes[:, 0] if len(dims) == 1 else sizes
    return batch, lengths


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value: Any) -> str:
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)
