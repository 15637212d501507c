"""The batch envelope's wire format: what the gateway packs, the handler reads, and back."""

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers import envelope
from handlers.envelope import Answer, EnvelopeError, Item

content_types = st.text(st.characters(max_codepoint=255), max_size=40)
items = st.lists(st.builds(Item, content_types, st.binary(max_size=200)), max_size=20)
answers = st.lists(
    st.builds(Answer, st.integers(100, 599), content_types, st.binary(max_size=200)),
    max_size=20,
)


@given(items)
def test_requests_round_trip(batch: list[Item]) -> None:
    assert envelope.unpack_request(envelope.pack_request(batch)) == batch


@given(answers)
def test_answers_round_trip(batch: list[Answer]) -> None:
    assert envelope.unpack_answers(envelope.pack_answers(batch)) == batch


@given(st.binary(max_size=300))
def test_any_bytes_are_an_envelope_or_an_envelope_error(data: bytes) -> None:
    for unpack in (envelope.unpack_request, envelope.unpack_answers):
        with contextlib.suppress(EnvelopeError):
            unpack(envelope.MAGIC + data)


def test_malformed_envelopes_are_refused_with_the_reason() -> None:
    packed = envelope.pack_request([Item("application/json", b"[1, 2]")])
    with pytest.raises(EnvelopeError, match="bad magic"):
        envelope.unpack_request(b"[1, 2]")
    with pytest.raises(EnvelopeError, match="truncated"):
        envelope.unpack_request(packed[:-1])
    with pytest.raises(EnvelopeError, match="trailing"):
        envelope.unpack_request(packed + b"x")
    with pytest.raises(EnvelopeError, match="at most 1024"):
        envelope.unpack_request(envelope.MAGIC + struct.pack("!I", 2**31))


def test_an_empty_envelope_holds_no_items() -> None:
    assert envelope.unpack_request(envelope.pack_request([])) == []
