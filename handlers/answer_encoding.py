"""Answers to bytes, exactly as TorchServe would send them: ``json.dumps(answer, indent=2)``.

TorchServe serialises a handler's non-bytes answer with ``json.dumps(..., indent=2)``
(``ts/protocol/otf_message_handler.py``), and an indent sends the standard library to its
pure-Python encoder: about 8 us for ten floats, as much as the forward pass of a small model
per request. ``encode_answer`` builds the same text directly (about 4x faster on number
lists) and hands anything it does not cover to ``json.dumps`` itself, so the bytes never
differ from TorchServe's; the handler then returns bytes, which TorchServe sends as they are.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii  # the C one, as json.dumps uses
from typing import Any

INDENT = "  "
_FLOAT_REPR = float.__repr__
_INT_REPR = int.__repr__
_CONSTANTS: dict[Any, str] = {None: "null", True: "true", False: "false"}


class _NotCovered(Exception):
    """A value the fast path leaves to ``json.dumps`` (non-finite floats, non-str keys, ...)."""


def encode_answer(answer: Any) -> bytes:
    """``json.dumps(answer, indent=2).encode()``, byte for byte, and what it raises."""
    try:
        return _encode(answer, 0).encode()
    except (_NotCovered, RecursionError):
        return json.dumps(answer, indent=2).encode()


def _encode(value: Any, level: int) -> str:
    kind = type(value)
    if kind is list or kind is tuple:
        if not value:
            return "[]"
        inner = "\n" + INDENT * (level + 1)
        separator = "," + inner
        close = "\n" + INDENT * level + "]"
        if type(value[0]) is float:
            try:
                numbers = separator.join(map(_FLOAT_REPR, value))
            except TypeError:  # not all floats: element by element below
                pass
            else:
                # A finite float's repr has no "n"; nan and inf are json.dumps' business.
                if "n" not in numbers:
                    return "[" + inner + numbers + close
        return "[" + inner + separator.join([_encode(v, level + 1) for v in value]) + close
    if kind is dict:
        if not value:
            return "{}"
        inner = "\n" + INDENT * (level + 1)
        parts = []
        for key, item in value.items():
            if type(key) is not str:
                raise _NotCovered
            parts.append(encode_basestring_ascii(key) + ": " + _encode(item, level + 1))
        return "{" + inner + ("," + inner).join(parts) + "\n" + INDENT * level + "}"
    if kind is str:
        return encode_basestring_ascii(value)
    if kind is float:
        text = _FLOAT_REPR(value)
        if "n" in text:
            raise _NotCovered
        return text
    if kind is int:
        return _INT_REPR(value)
    if value is None or kind is bool:
        return _CONSTANTS[value]
    raise _NotCovered
