"""Malformed bodies fail alone, as a 400, and never take the worker down (both found by the
gateway's fuzz test, tests/integration/service/test_fuzz.py).

A failure's reason phrase is ASCII: TorchServe's worker frames the phrase by its length in
characters and sends its UTF-8 bytes, so a non-ASCII phrase (a malformed `.npy` header quoted
in the message) corrupted the frame and killed the worker. A mutated `.npy` header made numpy
raise SyntaxError or tokenize.TokenError, which failed the whole batch as a 500."""

import json

import pytest

from handlers.batch import Failure
from handlers.decoding import decode_array
from handlers.errors import RequestError
from handlers.inputs import InputSpec
from handlers.torchserve_entry import ascii_phrase, encoded


def test_a_non_ascii_message_makes_an_ascii_phrase_and_keeps_the_body() -> None:
    message = "the .npy body is invalid: header {'descr': '<f4\xe9\x9e'} \u2603"
    status, phrase, body = encoded(Failure(400, "InvalidInput", message))
    assert status == 400
    assert phrase.isascii()
    assert len(phrase) == len(phrase.encode("utf-8"))
    assert phrase == "the .npy body is invalid: header {'descr': '<f4\\xe9\\x9e'} \\u2603"
    assert json.loads(body)["message"] == message


def test_an_ascii_message_is_the_phrase_unchanged() -> None:
    assert ascii_phrase("expected a float32 array of shape [1, 8, 8]") == (
        "expected a float32 array of shape [1, 8, 8]"
    )


@pytest.mark.parametrize(
    "header",
    [
        b"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 8, 8",  # TokenError
        b"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 8, 8), }\x00",  # SyntaxError
        b"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 8, 8),, }",  # SyntaxError
        b"{'descr': '<f4\xe9\x9e', 'fortran_order': False, 'shape': (1, 8, 8), }",
    ],
)
def test_a_malformed_npy_header_is_a_400_not_a_crash(header: bytes) -> None:
    padded = header + b" " * (63 - (10 + len(header)) % 64) + b"\n"
    body = b"\x93NUMPY\x01\x00" + len(padded).to_bytes(2, "little") + padded + b"\x00" * 256
    with pytest.raises(RequestError, match=r"the \.npy body is invalid"):
        decode_array(body, InputSpec(shape=(1, 8, 8), dtype="float32"))
