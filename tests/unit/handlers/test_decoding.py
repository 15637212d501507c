import io
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from handlers.decoding import decode_array, loads_json
from handlers.errors import RequestError
from handlers.settings import ImageSpec, InputSpec
from handlers.tasks.image import decode_image

SPEC = InputSpec((2, 3), "float32")
IMAGE = ImageSpec("L", (2, 2), (0.5,), (0.25,))


def npy(array: np.ndarray) -> bytearray:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return bytearray(buffer.getvalue())


def image_bytes(pixels: np.ndarray, fmt: str = "PNG", mode: str = "L") -> bytearray:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(buffer, format=fmt)
    return bytearray(buffer.getvalue())


def test_json_list_as_torchserve_decoded_it() -> None:
    tensor = decode_array([[1, 2, 3], [4, 5, 6.5]], SPEC)
    assert tensor.dtype == torch.float32
    assert tensor.tolist() == [[1, 2, 3], [4, 5, 6.5]]


def test_json_bytes_and_text() -> None:
    assert decode_array(b"[[1,2,3],[4,5,6]]", SPEC).shape == (2, 3)
    assert decode_array("[[1,2,3],[4,5,6]]", SPEC).shape == (2, 3)


def test_npy_body() -> None:
    array = np.arange(6, dtype=np.float64).reshape(2, 3)
    assert decode_array(npy(array), SPEC).tolist() == array.tolist()
    ints = decode_array(npy(np.ones((2, 3), dtype=np.int64)), InputSpec((2, 3), "int64"))
    assert ints.dtype == torch.int64


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([[1, 2], [3, 4]], r"expected a float32 array of shape \[2, 3\]; got shape \[2, 2\]"),
        ([[1, 2, 3], [4, 5]], "not a rectangular list of numbers"),
        ([["a", "b", "c"], ["d", "e", "f"]], "not a rectangular list of numbers"),
        ({"data": [1]}, "as a JSON nested list"),
        (b"{not json", "JSON nested list or an application/x-npy body"),
        (b"\x93NUMPY garbage", "the .npy body is invalid"),
    ],
)
def test_bad_tensor_bodies_say_what_was_expected(payload: object, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        decode_array(payload, SPEC)


def test_npy_of_the_wrong_kind_is_refused() -> None:
    with pytest.raises(RequestError, match="got a .npy array of float64"):
        decode_array(npy(np.ones((2, 3))), InputSpec((2, 3), "int64"))
    with pytest.raises(RequestError, match="float64 values"):
        decode_array([[1.5, 2, 3], [4, 5, 6]], InputSpec((2, 3), "int64"))


def test_pickled_npy_is_refused() -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.array([object()] * 6).reshape(2, 3), allow_pickle=True)
    with pytest.raises(RequestError, match="invalid"):
        decode_array(bytearray(buffer.getvalue()), SPEC)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_image_is_scaled_and_normalised(fmt: str) -> None:
    pixels = np.full((2, 2), 255, dtype=np.uint8)
    tensor = decode_image(image_bytes(pixels, fmt), IMAGE)
    assert tensor.shape == (1, 2, 2)
    # (1.0 - 0.5) / 0.25 = 2.0 for a white image
    assert torch.allclose(tensor, torch.full((1, 2, 2), 2.0))


def test_rgb_image_is_converted_and_resized() -> None:
    spec = ImageSpec("RGB", (3, 5), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    pixels = np.zeros((10, 10), dtype=np.uint8)
    tensor = decode_image(image_bytes(pixels), spec)
    assert tensor.shape == (3, 3, 5)


def test_other_image_formats_and_garbage_are_refused() -> None:
    buffer = io.BytesIO()
    Image.new("L", (2, 2)).save(buffer, format="GIF")
    with pytest.raises(RequestError, match="got GIF format"):
        decode_image(bytearray(buffer.getvalue()), IMAGE)
    with pytest.raises(RequestError, match="PNG or JPEG"):
        decode_image(bytearray(b"\x89PNG\r\n\x1a\n truncated"), IMAGE)
    with pytest.raises(RequestError, match="PNG or JPEG"):
        decode_image([1, 2, 3], IMAGE)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    buffer = io.BytesIO()
    Image.new("1", (8000, 8000)).save(buffer, format="PNG")
    with pytest.raises(RequestError, match="too large"):
        decode_image(bytearray(buffer.getvalue()), IMAGE)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_any_bytes_give_a_tensor_or_a_request_error(body: bytes) -> None:
    for decode, spec in ((decode_array, SPEC), (decode_image, IMAGE)):
        try:
            result = decode(bytearray(body), spec)  # type: ignore[operator]
        except RequestError:
            continue
        assert isinstance(result, torch.Tensor)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_value_gives_a_tensor_or_a_request_error(value: object) -> None:
    for payload in (value, json.dumps(value).encode()):
        try:
            result = decode_array(payload, SPEC)
        except RequestError:
            continue
        assert result.shape == (2, 3)


def _same_json(a: object, b: object) -> bool:
    # NaN != NaN: compare the canonical text, which also tells 1 from 1.0 and keeps order.
    return json.dumps(a) == json.dumps(b) and type(a) is type(b)


@pytest.mark.parametrize(
    "raw",
    [
        b"[[1.5, -2, 3e-7]]",
        b"[NaN, Infinity, -Infinity]",  # orjson refuses these; json.loads reads them
        b"[123456789012345678901234567890]",  # past 64 bits
        b'["\\ud800"]',  # a lone surrogate
        "[1, 2]".encode("utf-16"),  # json.loads detects UTF-16 and UTF-32 bodies
        b"[1e400]",
        b'{"a": 1, "a": 2}',
    ],
)
def test_loads_json_reads_what_json_loads_reads(raw: bytes) -> None:
    assert _same_json(loads_json(raw), json.loads(raw))


@pytest.mark.parametrize("raw", [b"", b"[1,", b"\xff\xfe\x00", b"[1] x", b"{'a': 1}"])
def test_loads_json_refuses_what_json_loads_refuses(raw: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(raw)
    with pytest.raises(ValueError):
        loads_json(raw)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda children: st.lists(children) | st.dictionaries(st.text(), children),
        max_leaves=20,
    )
)
def test_loads_json_equals_json_loads_on_any_value(value: object) -> None:
    raw = json.dumps(value).encode("utf-8", "surrogatepass")
    assert _same_json(loads_json(raw), json.loads(raw))
