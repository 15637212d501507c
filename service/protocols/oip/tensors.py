"""The protocol's tensor datatypes and their bytes, in pure Python (the gateway has no numpy).

A tensor's data is held in one of two forms: numeric and BOOL tensors as their raw
little-endian bytes, row-major (what Triton's binary extension sends); BYTES tensors as a
list of `bytes`, one per element. Binary BYTES data is each element as a 4-byte little-endian
length and its bytes (`extension_binary_data.md`; `tritonclient.utils.serialize_byte_tensor`).

To the handler an instance goes as a `.npy` body (one input) or an `.npz` body (named inputs):
its dtype exact, no number formatting or parsing on either side.
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class TensorError(ValueError):
    """Tensor data that does not match its datatype or shape; the message says how."""


@dataclass(frozen=True, slots=True)
class Datatype:
    """One of the protocol's datatypes: its element size, `struct` code and `.npy` dtype."""

    name: str
    size: int  # bytes per element; 0 for BYTES (variable)
    code: str  # struct format character; "" where struct has none (BF16, BYTES)
    npy: str  # the .npy dtype an instance is sent to the handler as

    @property
    def is_bytes(self) -> bool:
        return self.name == "BYTES"


DATATYPES: dict[str, Datatype] = {
    d.name: d
    for d in (
        Datatype("BOOL", 1, "?", "|b1"),
        Datatype("UINT8", 1, "B", "|u1"),
        Datatype("UINT16", 2, "H", "<u2"),
        Datatype("UINT32", 4, "I", "<u4"),
        Datatype("UINT64", 8, "Q", "<u8"),
        Datatype("INT8", 1, "b", "|i1"),
        Datatype("INT16", 2, "h", "<i2"),
        Datatype("INT32", 4, "i", "<i4"),
        Datatype("INT64", 8, "q", "<i8"),
        Datatype("FP16", 2, "e", "<f2"),
        Datatype("FP32", 4, "f", "<f4"),
        Datatype("FP64", 8, "d", "<f8"),
        # numpy has no bfloat16: an instance goes as float32, the handler narrows it.
        Datatype("BF16", 2, "", "<f4"),
        Datatype("BYTES", 0, "", ""),
    )
}
# The handler's dtypes (handlers/settings.py DTYPES) as the protocol names them.
FROM_HANDLER_DTYPE = {
    "float32": "FP32",
    "float64": "FP64",
    "float16": "FP16",
    "bfloat16": "BF16",
    "int64": "INT64",
    "int32": "INT32",
    "uint8": "UINT8",
    "bool": "BOOL",
}
_LENGTH = struct.Struct("<I")
_FLOATS = frozenset({"FP16", "FP32", "FP64", "BF16"})
MAX_RANK = 32

TensorData = bytes | list[bytes]


def datatype(name: str) -> Datatype:
    """The datatype called `name`; `TensorError` if the protocol has none."""
    found = DATATYPES.get(name)
    if found is None:
        raise TensorError(f"unknown datatype {name!r}; use one of {', '.join(DATATYPES)}")
    return found


def element_count(shape: Sequence[int]) -> int:
    """Elements in a tensor of `shape` (1 for a scalar)."""
    return math.prod(shape)


def from_json(dtype: Datatype, shape: Sequence[int], data: Any) -> TensorData:
    """`data` (the JSON `data` field: flat or nested, row-major) as the tensor's data.

    Numbers must fit the datatype (integers for integer types, booleans for BOOL), BYTES
    elements are strings (sent as their UTF-8). `TensorError` otherwise.
    """
    values = _flatten(data)
    expected = element_count(shape)
    if len(values) != expected:
        raise TensorError(
            f"shape {list(shape)} holds {expected} elements; 'data' has {len(values)}"
        )
    if dtype.is_bytes:
        if not all(isinstance(v, str) for v in values):
            raise TensorError("BYTES data must be strings")
        return [v.encode("utf-8", "surrogatepass") for v in values]
    if dtype.name == "BOOL":
        if not all(isinstance(v, bool) for v in values):
            raise TensorError("BOOL data must be true or false")
    elif dtype.name in _FLOATS:
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            raise TensorError(f"{dtype.name} data must be numbers")
    elif not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise TensorError(f"{dtype.name} data must be integers")
    return _pack(dtype, values)


def from_binary(dtype: Datatype, shape: Sequence[int], raw: bytes) -> TensorData:
    """Raw binary data (Triton's extension) as the tensor's data; `TensorError` if its size
    does not match `shape`."""
    expected = element_count(shape)
    if not dtype.is_bytes:
        if len(raw) != expected * dtype.size:
            raise TensorError(
                f"shape {list(shape)} of {dtype.name} is {expected * dtype.size} bytes; "
                f"got {len(raw)}"
            )
        return raw
    items: list[bytes] = []
    offset = 0
    view = memoryview(raw)
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise TensorError("BYTES data ends inside an element's 4-byte length")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(raw):
            raise TensorError("BYTES data ends inside an element")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if len(items) != expected:
        raise TensorError(f"shape {list(shape)} holds {expected} elements; got {len(items)}")
    return items


def to_binary(dtype: Datatype, data: TensorData) -> bytes:
    """The tensor's data as Triton's binary extension sends it."""
    if isinstance(data, bytes):
        return data
    return b"".join(_LENGTH.pack(len(item)) + item for item in data)


def to_json(dtype: Datatype, data: TensorData) -> list[Any]:
    """The tensor's data as the JSON `data` field (flat, row-major); BYTES as strings."""
    if isinstance(data, list):
        return [item.decode("utf-8", "replace") for item in data]
    if dtype.name == "BF16":
        return list(struct.unpack(f"<{len(data) // 2}f", _bf16_to_fp32(data)))
    return list(struct.unpack(f"<{len(data) // dtype.size}{dtype.code}", data))


def pack_values(dtype: Datatype, values: Sequence[Any]) -> TensorData:
    """Python values (numbers, booleans, or strings for BYTES) as the tensor's data."""
    if dtype.is_bytes:
        return [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in values]
    return _pack(dtype, values)


def rows(dtype: Datatype, shape: Sequence[int], data: TensorData) -> list[TensorData]:
    """The tensor split along its first dimension: one `TensorData` per instance."""
    count = shape[0]
    per_row = element_count(shape[1:])
    if isinstance(data, list):
        return [data[i * per_row : (i + 1) * per_row] for i in range(count)]
    size = per_row * dtype.size
    return [data[i * size : (i + 1) * size] for i in range(count)]


def npy(dtype: Datatype, shape: Sequence[int], data: bytes) -> bytes:
    """A `.npy` file (format 1.0) of one numeric tensor: what the handler's decoder reads."""
    if dtype.name == "BF16":
        data = _bf16_to_fp32(data)
    dims = "".join(f"{d}, " for d in shape).rstrip(" ") if len(shape) != 1 else f"{shape[0]},"
    header = f"{{'descr': '{dtype.npy}', 'fortran_order': False, 'shape': ({dims}), }}"
    # Padded with spaces and a newline so that the data starts on a 64-byte boundary.
    total = 10 + len(header) + 1
    header += " " * (-total % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin-1") + data


def npz(arrays: Sequence[tuple[str, bytes]]) -> bytes:
    """An `.npz` file (a zip of `<name>.npy` members, stored) of named `.npy` files."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, content in arrays:
            archive.writestr(f"{name}.npy", content)
    return buffer.getvalue()


def _pack(dtype: Datatype, values: Sequence[Any]) -> bytes:
    code = "f" if dtype.name == "BF16" else dtype.code
    try:
        packed = struct.pack(f"<{len(values)}{code}", *values)
    except (struct.error, OverflowError):
        raise TensorError(f"a value is out of range for {dtype.name}") from None
    return _fp32_to_bf16(packed) if dtype.name == "BF16" else packed


def _flatten(data: Any) -> list[Any]:
    """Nested lists to one flat list, row-major; `TensorError` beyond `MAX_RANK` levels."""
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    stack: list[tuple[list[Any], int]] = [(data, 0)]  # a list and its next index
    while stack:
        items, index = stack[-1]
        if index == len(items):
            stack.pop()
            continue
        stack[-1] = (items, index + 1)
        item = items[index]
        if not isinstance(item, list):
            flat.append(item)
        elif len(stack) >= MAX_RANK:
            raise TensorError(f"'data' is nested more than {MAX_RANK} levels deep")
        elif any(isinstance(inner, list) for inner in item):
            stack.append((item, 0))
        else:  # the innermost level, the common case: taken whole
            flat.extend(item)
    return flat


def _bf16_to_fp32(data: bytes) -> bytes:
    """bfloat16 is float32's upper half: each element gains two zero bytes below it."""
    out = bytearray(len(data) * 2)
    out[2::4] = data[0::2]
    out[3::4] = data[1::2]
    return bytes(out)


def _fp32_to_bf16(data: bytes) -> bytes:
    """float32 to bfloat16 by truncation (the upper two bytes of each element)."""
    out = bytearray(len(data) // 2)
    out[0::2] = data[2::4]
    out[1::2] = data[3::4]
    return bytes(out)


def nested_shape(value: Any) -> tuple[int, ...]:
    """The shape of a rectangular nested list (its first element at each level)."""
    shape: list[int] = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def flatten(value: Any) -> list[Any]:
    """`value` (a number or nested lists) as a flat row-major list."""
    return _flatten(value)
