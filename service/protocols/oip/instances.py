"""A request's tensors as N prediction instances, and the N answers as output tensors.

An input of shape `[N, ...]` holds N instances. Each instance goes to the handler as the body
`POST /predictions` would take: a `.npy` array (one input), an `.npz` of named arrays (named
inputs), the image's bytes, or the text as UTF-8. The handler answers each as it would
answer `/predictions` (a nested list; `{label: probability}` for a classifier), and those
answers are stacked back into `[N, ...]` outputs, in order.
"""

from __future__ import annotations

import json
from typing import Any

from service.errors import InvalidRequest, UpstreamProtocolError
from service.prediction import Instance
from service.protocols.oip import codec, tensors
from service.protocols.oip.codec import Tensor
from service.protocols.oip.signatures import (
    IMAGE_CLASSIFICATION,
    LABELS,
    OUTPUT,
    PROBABILITIES,
    ModelSignature,
    TensorSpec,
)
from service.protocols.oip.tensors import DATATYPES, TensorError

# One request may hold at most this many instances (the batch envelope's own limit).
MAX_INSTANCES = 1024
NPY = b"application/x-npy"
NPZ = b"application/x-npz"
TEXT = b"text/plain; charset=utf-8"
_FP32 = DATATYPES["FP32"]
_BYTES = DATATYPES["BYTES"]


def to_instances(signature: ModelSignature, inputs: list[Tensor]) -> list[Instance]:
    """The instances `inputs` hold; `InvalidRequest` when they do not match `signature`."""
    expected = {spec.name: spec for spec in signature.inputs}
    given = {tensor.name: tensor for tensor in inputs}
    if set(given) != set(expected):
        raise InvalidRequest(
            f"This model takes the input(s) {_names(expected)}; the request has {_names(given)}."
        )
    counts = set()
    for spec in signature.inputs:
        counts.add(_check(spec, given[spec.name]))
    if len(counts) != 1:
        raise InvalidRequest("Every input must hold the same number of instances (first dim).")
    count = counts.pop()
    if not 1 <= count <= MAX_INSTANCES:
        raise InvalidRequest(
            f"A request holds 1 to {MAX_INSTANCES} instances (the first dimension); got {count}."
        )
    if signature.is_classifier:
        (tensor,) = inputs
        assert isinstance(tensor.data, list)  # BYTES
        return [_classifier_instance(signature.task, item, i) for i, item in enumerate(tensor.data)]
    per_input = {
        spec.name: tensors.rows(
            given[spec.name].datatype, given[spec.name].shape, given[spec.name].data
        )
        for spec in signature.inputs
    }
    instances = []
    for index in range(count):
        arrays = []
        for spec in signature.inputs:
            tensor = given[spec.name]
            row = per_input[spec.name][index]
            assert isinstance(row, bytes)  # numeric
            arrays.append((spec.name, tensors.npy(tensor.datatype, tensor.shape[1:], row)))
        if signature.named:
            instances.append(Instance(NPZ, tensors.npz(arrays)))
        else:
            instances.append(Instance(NPY, arrays[0][1]))
    return instances


def to_outputs(signature: ModelSignature, answers: list[bytes], top_k: int | None) -> list[Tensor]:
    """The model's answers to N instances as output tensors of first dimension N.

    Raises `UpstreamProtocolError` when the answers cannot be read or stacked.
    """
    values = []
    for answer in answers:
        try:
            values.append(json.loads(answer))
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise UpstreamProtocolError("The model's answer is not JSON.") from None
    if signature.is_classifier:
        return _classifier_outputs(values, top_k or signature.top_k or 1)
    if values and all(isinstance(v, dict) for v in values):
        # A model answering several named tensors (a structured output): one output each.
        names = list(values[0])
        return [_stack(name, [v.get(name) for v in values]) for name in names]
    return [_stack(OUTPUT, values)]


def top_k_parameter(signature: ModelSignature, parameters: dict[str, Any] | None) -> int | None:
    """The request's `top_k` for a classifier (at most the archive's); None for others."""
    value = (parameters or {}).get("top_k")
    if value is None or not signature.is_classifier:
        return None
    limit = signature.top_k or 1
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
        raise InvalidRequest(f"The parameter 'top_k' must be an integer from 1 to {limit}.")
    return value


def _check(spec: TensorSpec, tensor: Tensor) -> int:
    where = f"input {codec.shown(spec.name)}"
    if tensor.datatype.name != spec.datatype:
        raise InvalidRequest(
            f"{where}: expected datatype {spec.datatype}, got {tensor.datatype.name}"
        )
    shape = tensor.shape
    if spec.datatype == "BYTES" and len(shape) == 2 and shape[1] == 1:
        shape = shape[:1]  # [N, 1]: one element per instance, as [N]
    wanted = [-1, *spec.shape]
    if len(shape) != len(wanted) or any(
        w != -1 and w != s for w, s in zip(wanted, shape, strict=True)
    ):
        raise InvalidRequest(
            f"{where}: expected shape {wanted} (-1: any size), got {list(tensor.shape)}"
        )
    return shape[0]


def _classifier_instance(task: str, item: bytes, index: int) -> Instance:
    if task == IMAGE_CLASSIFICATION:
        return Instance(_image_type(item), item)
    try:
        item.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(f"instance {index}: a text must be UTF-8") from None
    return Instance(TEXT, item)


def _image_type(item: bytes) -> bytes:
    if item.startswith(b"\x89PNG"):
        return b"image/png"
    if item.startswith(b"\xff\xd8"):
        return b"image/jpeg"
    return b"application/octet-stream"  # the handler says what it expected


def _classifier_outputs(values: list[Any], top_k: int) -> list[Tensor]:
    probabilities: list[float] = []
    labels: list[str] = []
    width = None
    for value in values:
        if not isinstance(value, dict):
            raise UpstreamProtocolError("The classifier's answer is not {label: probability}.")
        ranked = list(value.items())[:top_k]
        if width is not None and len(ranked) != width:
            raise UpstreamProtocolError("The classifier answered different numbers of classes.")
        width = len(ranked)
        labels.extend(str(label) for label, _ in ranked)
        probabilities.extend(float(p) for _, p in ranked)
    shape = (len(values), width or 0)
    return [
        Tensor(PROBABILITIES, _FP32, shape, _pack(_FP32, probabilities)),
        Tensor(LABELS, _BYTES, shape, tensors.pack_values(_BYTES, labels)),
    ]


def _stack(name: str, values: list[Any]) -> Tensor:
    shape: tuple[int, ...] | None = None
    flat: list[Any] = []
    for value in values:
        row_shape = tensors.nested_shape(value)
        row = tensors.flatten(value)
        if len(row) != tensors.element_count(row_shape) or (
            shape is not None and row_shape != shape
        ):
            raise UpstreamProtocolError(
                f"The model's answers for output {name!r} are not tensors of one shape."
            )
        shape = row_shape
        flat.extend(row)
    if not all(isinstance(v, int | float) for v in flat):
        raise UpstreamProtocolError(f"The model's answer for output {name!r} is not numbers.")
    return Tensor(name, _FP32, (len(values), *(shape or ())), _pack(_FP32, flat))


def _pack(dtype: tensors.Datatype, values: list[Any]) -> bytes:
    try:
        packed = tensors.pack_values(dtype, values)
    except TensorError as exc:
        raise UpstreamProtocolError(
            f"The model's answer does not fit {dtype.name}: {exc}"
        ) from None
    assert isinstance(packed, bytes)
    return packed


def _names(names: dict[str, Any]) -> str:
    listed = [codec.shown(n) for n in list(names)[:8]]
    more = f" and {len(names) - 8} more" if len(names) > 8 else ""
    return (", ".join(listed) or "none") + more
