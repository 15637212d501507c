"""encode_answer gives TorchServe's bytes (json.dumps, indent 2) for every value, or its error."""

from __future__ import annotations

import enum
import json
import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.answer_encoding import encode_answer


def torchserve_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=2).encode()


class Colour(enum.IntEnum):
    RED = 1


class Ratio(float):
    pass


@pytest.mark.parametrize(
    "value",
    [
        [0.1, 1e-05, -0.0, 1e16, 123456789.125, 5e-324],
        [[0.5, 1.5], [2.5, 3.5]],
        [[[1.0]], [], [[]]],
        {"cat": 0.75, "dög": 0.25, 'quote"s': 1e-9},
        [1.0, 2, True, None, "x"],  # a mixed list starting with a float
        [math.nan, 1.0],
        [1.0, math.inf, -math.inf],
        {"x": math.nan},
        {1: "int key", None: "null key", 2.5: "float key", False: "bool key"},
        {"code": 400, "type": "InvalidInput", "message": "expected\na list \u2028"},
        (1.0, (2.0, 3.0)),
        [Colour.RED, Ratio(0.5), Ratio(0.25)],
        [],
        {},
        "",
        10**30,
        -7,
        False,
        None,
    ],
)
def test_same_bytes_as_torchserve(value: Any) -> None:
    assert encode_answer(value) == torchserve_bytes(value)


answers = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=5)
    | st.lists(st.floats(), max_size=6),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=3) | st.integers(), children, max_size=3)
    ),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(answers)
def test_same_bytes_as_torchserve_for_any_json_value(value: Any) -> None:
    assert encode_answer(value) == torchserve_bytes(value)


@pytest.mark.parametrize(
    ("value", "error"),
    [({"t": torch.ones(2)}, TypeError), ([object()], TypeError), ({(1, 2): 1}, TypeError)],
)
def test_what_json_cannot_hold_raises_as_json_dumps_does(value: Any, error: type) -> None:
    with pytest.raises(error):
        torchserve_bytes(value)
    with pytest.raises(error):
        encode_answer(value)


def test_a_circular_answer_raises_as_json_dumps_does() -> None:
    loop: list[Any] = [1.0]
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        encode_answer(loop)
