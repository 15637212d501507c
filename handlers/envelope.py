"""The batch envelope: many prediction requests in one TorchServe request, and their answers.

The gateway batches concurrent requests for a model itself (`service.batching`): while the
model has requests in flight, new ones queue in the gateway and go upstream together as one
envelope, which the handler unpacks into one forward pass. This module is the wire format
both sides share. It imports nothing but the standard library, so the gateway (which has no
torch) imports it too.

Request (big-endian): MAGIC, u32 count, then per item: u16 content-type length, the content
type (latin-1), u32 body length, the body.
Answer: MAGIC, u32 count, then per item: u16 status, u16 content-type length, the content
type, u32 body length, the body.

A handler that understands envelopes says so on every answer with `ACCEPTS_HEADER`, so the
gateway never sends one to a model that would read it as a plain input.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

CONTENT_TYPE = "application/x-prediction-batch"
ACCEPTS_HEADER = "x-accepts-prediction-batch"
MAGIC = b"\x00PBATCH1"
# An envelope never holds more than this; a larger count is a corrupt or hostile body.
MAX_ITEMS = 1024

_COUNT = struct.Struct("!I")
_REQUEST_ITEM = struct.Struct("!H")
_ANSWER_ITEM = struct.Struct("!HH")
_LENGTH = struct.Struct("!I")


class EnvelopeError(ValueError):
    """The bytes are not a well-formed envelope."""


@dataclass(frozen=True, slots=True)
class Item:
    """One request in an envelope: its content type and body."""

    content_type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer in an envelope: HTTP status, content type and body."""

    status: int
    content_type: str
    body: bytes


def pack_request(items: Iterable[Item]) -> bytes:
    """An envelope holding `items`, in order."""
    parts = [MAGIC, b""]
    count = 0
    for item in items:
        content_type = item.content_type.encode("latin-1")
        parts += (
            _REQUEST_ITEM.pack(len(content_type)),
            content_type,
            _LENGTH.pack(len(item.body)),
            item.body,
        )
        count += 1
    parts[1] = _COUNT.pack(count)
    return b"".join(parts)


def pack_answers(answers: Sequence[Answer]) -> bytes:
    """An envelope holding `answers`, in order."""
    parts = [MAGIC, _COUNT.pack(len(answers))]
    for answer in answers:
        content_type = answer.content_type.encode("latin-1")
        parts += (
            _ANSWER_ITEM.pack(answer.status, len(content_type)),
            content_type,
            _LENGTH.pack(len(answer.body)),
            answer.body,
        )
    return b"".join(parts)


def unpack_request(data: bytes | bytearray) -> list[Item]:
    """The items of a request envelope; EnvelopeError if `data` is not one."""
    reader = _Reader(data)
    items = []
    for _ in range(reader.count()):
        (type_length,) = reader.unpack(_REQUEST_ITEM)
        content_type = reader.take(type_length).decode("latin-1")
        items.append(Item(content_type, reader.take(reader.unpack(_LENGTH)[0])))
    reader.finish()
    return items


def unpack_answers(data: bytes | bytearray) -> list[Answer]:
    """The answers of an answer envelope; EnvelopeError if `data` is not one."""
    reader = _Reader(data)
    answers = []
    for _ in range(reader.count()):
        status, type_length = reader.unpack(_ANSWER_ITEM)
        content_type = reader.take(type_length).decode("latin-1")
        answers.append(Answer(status, content_type, reader.take(reader.unpack(_LENGTH)[0])))
    reader.finish()
    return answers


class _Reader:
    """Reads an envelope front to back, raising EnvelopeError on anything out of bounds."""

    def __init__(self, data: bytes | bytearray) -> None:
        if bytes(data[: len(MAGIC)]) != MAGIC:
            raise EnvelopeError("not a prediction batch envelope (bad magic)")
        self.view = memoryview(data)
        self.offset = len(MAGIC)

    def count(self) -> int:
        (count,) = self.unpack(_COUNT)
        if count > MAX_ITEMS:
            raise EnvelopeError(f"an envelope holds at most {MAX_ITEMS} items, not {count}")
        return int(count)

    def unpack(self, layout: struct.Struct) -> tuple[int, ...]:
        return layout.unpack(self.take(layout.size))

    def take(self, size: int) -> bytes:
        end = self.offset + size
        if end > len(self.view):
            raise EnvelopeError("truncated prediction batch envelope")
        chunk = self.view[self.offset : end].tobytes()
        self.offset = end
        return chunk

    def finish(self) -> None:
        if self.offset != len(self.view):
            raise EnvelopeError("trailing bytes after the last item of the envelope")
