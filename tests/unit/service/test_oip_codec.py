"""The Open Inference Protocol codec: datatypes, JSON and binary tensors both ways, BYTES,
and the instances the handler receives (read back with numpy, as the handler reads them).

Requests are built by tritonclient's own request builder and responses read by its own
`InferResult`, so the codec is checked against the client, not against itself.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import tritonclient.http as triton
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tritonclient.http._utils import _get_inference_request
from tritonclient.utils import triton_to_np_dtype

from service.errors import InvalidRequest, UpstreamProtocolError
from service.protocols.oip import codec, instances, tensors
from service.protocols.oip.datamodels import RequestOutput
from service.protocols.oip.signatures import (
    SignatureUnavailable,
    signature_from_handler,
)

NUMERIC = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
           "FP16", "FP32", "FP64"]  # fmt: skip


def triton_body(
    inputs: list[triton.InferInput], outputs=None, parameters=None
) -> tuple[bytes, str | None]:
    body, json_size = _get_inference_request(
        inputs, "req-1", outputs, 0, False, False, 0, None, parameters
    )
    return body, None if json_size is None else str(json_size)


def infer_input(name: str, array: np.ndarray, datatype: str, binary: bool) -> triton.InferInput:
    item = triton.InferInput(name, list(array.shape), datatype)
    item.set_data_from_numpy(array, binary_data=binary)
    return item


def as_numpy(tensor: codec.Tensor) -> np.ndarray:
    if tensor.datatype.is_bytes:
        assert isinstance(tensor.data, list)
        return np.array(tensor.data, dtype=np.object_).reshape(tensor.shape)
    dtype = triton_to_np_dtype(tensor.datatype.name)
    return np.frombuffer(tensor.data, dtype=dtype).reshape(tensor.shape)  # type: ignore[arg-type]


@pytest.mark.parametrize("datatype", NUMERIC)
@pytest.mark.parametrize("binary", [True, False])
def test_every_numeric_datatype_decodes_as_tritonclient_sent_it(
    datatype: str, binary: bool
) -> None:
    dtype = triton_to_np_dtype(datatype)
    if datatype == "BOOL":
        array = np.array([[True, False, True], [False, False, True]])
    else:
        info = np.finfo(dtype) if np.dtype(dtype).kind == "f" else np.iinfo(dtype)
        array = np.array([[info.min, 0, 1], [info.max, 2, 3]], dtype=dtype)
    body, header = triton_body([infer_input("x", array, datatype, binary)])
    decoded = codec.decode_request(body, header)
    (tensor,) = decoded.inputs
    assert tensor.shape == (2, 3)
    np.testing.assert_array_equal(as_numpy(tensor), array)
    assert decoded.request.id == "req-1"


@pytest.mark.parametrize("binary", [True, False])
def test_bytes_inputs_both_ways(binary: bool) -> None:
    words = np.array([["héllo".encode(), b""], [b"a", b"longer text"]], dtype=np.object_)
    body, header = triton_body([infer_input("text", words, "BYTES", binary)])
    (tensor,) = codec.decode_request(body, header).inputs
    assert tensor.data == ["héllo".encode(), b"", b"a", b"longer text"]
    assert tensor.shape == (2, 2)


def test_several_binary_inputs_are_cut_in_order() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([[7], [8]], dtype=np.int64)
    c = np.array([b"png", b"jpeg"], dtype=np.object_)
    body, header = triton_body(
        [infer_input("a", a, "FP32", True), infer_input("b", b, "INT64", False),
         infer_input("c", c, "BYTES", True)]
    )  # fmt: skip
    decoded = codec.decode_request(body, header)
    np.testing.assert_array_equal(as_numpy(decoded.inputs[0]), a)
    np.testing.assert_array_equal(as_numpy(decoded.inputs[1]), b)
    assert decoded.inputs[2].data == [b"png", b"jpeg"]


def test_nested_and_flat_json_data_are_the_same() -> None:
    for data in ([[1, 2], [3, 4]], [1, 2, 3, 4]):
        body = json.dumps(
            {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "INT32", "data": data}]}
        )
        (tensor,) = codec.decode_request(body.encode(), None).inputs
        np.testing.assert_array_equal(as_numpy(tensor), [[1, 2], [3, 4]])


def test_bf16_binary_goes_to_the_handler_as_float32() -> None:
    values = np.array([1.5, -2.0, 3.140625], dtype=np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    data = tensors.from_binary(tensors.datatype("BF16"), [3], bf16)
    assert isinstance(data, bytes)
    array = np.load(io.BytesIO(tensors.npy(tensors.datatype("BF16"), (3,), data)))
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, values)


BINARY_HEADER = (
    b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", '
    b'"parameters": {"binary_data_size": 4}}]}'
)
JSON_HEADER = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}'


@pytest.mark.parametrize(
    ("document", "header", "message"),
    [
        (b"{not json", None, "could not be parsed"),
        (b'{"inputs": []}', None, "inputs"),
        (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1]}]}', None,
         "holds 2 elements"),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP99", "data": [1]}]}', None,
         "unknown datatype"),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [300]}]}', None,
         "out of range"),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [1.5]}]}', None,
         "must be integers"),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "BOOL", "data": [1]}]}', None,
         "true or false"),
        (b'{"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": []}]}', None,
         ">= 0"),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}', None, "no 'data'"),
        (BINARY_HEADER + b"abc", str(len(BINARY_HEADER)), "past the end"),
        (JSON_HEADER + b"xx", str(len(JSON_HEADER)), "beyond"),
        (b"{}", "9", "byte length"),
    ],
)  # fmt: skip
def test_bad_requests_are_400_saying_why(document: bytes, header: str | None, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        codec.decode_request(document, header)
    assert message in caught.value.message
    assert caught.value.status == 400


def test_bytes_data_cut_short_is_refused() -> None:
    with pytest.raises(tensors.TensorError, match="ends inside"):
        tensors.from_binary(tensors.datatype("BYTES"), [1], b"\x05\x00\x00\x00abc")


def response_via_tritonclient(encoded: codec.EncodedResponse) -> triton.InferResult:
    return triton.InferResult.from_response_body(encoded.body, header_length=encoded.header_length)


@pytest.mark.parametrize("binary", [True, False])
def test_responses_read_back_by_tritonclient(binary: bool) -> None:
    logits = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    labels = np.array([[b"cat", b"dog", b"\xc3\xa9"]] * 2, dtype=np.object_)
    outputs = [
        codec.Tensor("logits", tensors.datatype("FP32"), (2, 3), logits.tobytes()),
        codec.Tensor("labels", tensors.datatype("BYTES"), (2, 3), list(labels.flatten())),
    ]
    encoded = codec.encode_response(
        {"model_name": "m", "id": "7"}, outputs, None, {"binary_data_output": binary}
    )
    assert (encoded.header_length is not None) == binary
    result = response_via_tritonclient(encoded)
    np.testing.assert_array_equal(result.as_numpy("logits"), logits)
    read = result.as_numpy("labels")
    assert [[bytes(x) if binary else x.encode() for x in row] for row in read] == labels.tolist()
    assert result.get_response()["id"] == "7"


def test_requested_outputs_each_in_their_own_form() -> None:
    values = np.array([[1.0, 2.0]], dtype=np.float32)
    outputs = [
        codec.Tensor("a", tensors.datatype("FP32"), (1, 2), values.tobytes()),
        codec.Tensor("b", tensors.datatype("FP32"), (1, 2), values.tobytes()),
    ]
    requested = [
        RequestOutput(name="b", parameters={"binary_data": True}),
    ]
    encoded = codec.encode_response({"model_name": "m"}, outputs, requested, None)
    result = response_via_tritonclient(encoded)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["b"]
    np.testing.assert_array_equal(result.as_numpy("b"), values)
    with pytest.raises(InvalidRequest, match="Unknown output 'c'"):
        codec.encode_response({"model_name": "m"}, outputs, [RequestOutput(name="c")], None)


@given(
    hnp.arrays(
        st.sampled_from([np.float32, np.float64, np.int64, np.int32, np.uint8, np.bool_]),
        hnp.array_shapes(min_dims=1, max_dims=4, max_side=4),
    ),
    st.booleans(),
)
def test_any_array_survives_the_round_trip(array: np.ndarray, binary: bool) -> None:
    from tritonclient.utils import np_to_triton_dtype

    datatype = np_to_triton_dtype(array.dtype)
    body, header = triton_body([infer_input("x", array, datatype, binary)])
    (tensor,) = codec.decode_request(body, header).inputs
    np.testing.assert_array_equal(as_numpy(tensor), array)
    encoded = codec.encode_response(
        {"model_name": "m"}, [tensor], None, {"binary_data_output": not binary}
    )
    np.testing.assert_array_equal(response_via_tritonclient(encoded).as_numpy("x"), array)


TENSOR_MODEL = {"task": "tensor", "input": {"shape": [2, -1], "dtype": "int64"}}
NAMED_MODEL = {
    "task": "tensor",
    "inputs": [{"name": "x", "shape": [3]}, {"name": "mask", "shape": [3], "dtype": "bool"}],
}
CLASSIFIER = {"task": "image-classification", "top_k": 2, "image": {"mode": "L"}}


def test_signatures_from_the_handler_settings() -> None:
    tensor = signature_from_handler(TENSOR_MODEL)
    assert [s.metadata() for s in tensor.inputs] == [
        {"name": "input", "datatype": "INT64", "shape": [-1, 2, -1]}
    ]
    named = signature_from_handler(NAMED_MODEL)
    assert named.named and [s.name for s in named.inputs] == ["x", "mask"]
    text = signature_from_handler({"task": "text-classification"})
    assert text.inputs[0].metadata() == {"name": "text", "datatype": "BYTES", "shape": [-1]}
    assert [o.metadata()["shape"] for o in text.outputs] == [[-1, 5], [-1, 5]]
    for section in ({}, {"task": "tensor"}, {"task": "speech"}, {"input": {"shape": [0]}}):
        with pytest.raises(SignatureUnavailable):
            signature_from_handler(section)


def decode(document: dict) -> list[codec.Tensor]:
    return codec.decode_request(json.dumps(document).encode(), None).inputs


def test_instances_are_npy_bodies_one_per_row() -> None:
    signature = signature_from_handler(TENSOR_MODEL)
    inputs = decode(
        {"inputs": [{"name": "input", "shape": [2, 2, 3], "datatype": "INT64",
                     "data": list(range(12))}]}
    )  # fmt: skip
    work = instances.to_instances(signature, inputs)
    assert [w.content_type for w in work] == [instances.NPY] * 2
    second = np.load(io.BytesIO(work[1].body))
    np.testing.assert_array_equal(second, np.arange(6, 12).reshape(2, 3))
    assert second.dtype == np.int64


def test_named_inputs_are_npz_bodies() -> None:
    signature = signature_from_handler(NAMED_MODEL)
    inputs = decode(
        {"inputs": [
            {"name": "mask", "shape": [1, 3], "datatype": "BOOL", "data": [True, False, True]},
            {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]},
        ]}
    )  # fmt: skip
    (work,) = instances.to_instances(signature, inputs)
    assert work.content_type == instances.NPZ
    arrays = np.load(io.BytesIO(work.body))
    np.testing.assert_array_equal(arrays["x"], [1, 2, 3])
    np.testing.assert_array_equal(arrays["mask"], [True, False, True])


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
         "takes the input(s) 'x', 'mask'"),
        ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]},
                     {"name": "mask", "shape": [1, 3], "datatype": "BOOL", "data": [True] * 3}]},
         "expected datatype FP32, got FP64"),
        ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]},
                     {"name": "mask", "shape": [1, 3], "datatype": "BOOL", "data": [True] * 3}]},
         "expected shape [-1, 3]"),
        ({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1] * 6},
                     {"name": "mask", "shape": [1, 3], "datatype": "BOOL", "data": [True] * 3}]},
         "same number of instances"),
        ({"inputs": [{"name": "x", "shape": [0, 3], "datatype": "FP32", "data": []},
                     {"name": "mask", "shape": [0, 3], "datatype": "BOOL", "data": []}]},
         "1 to 1024 instances"),
    ],
)  # fmt: skip
def test_inputs_that_do_not_fit_the_model_are_400(document: dict, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        instances.to_instances(signature_from_handler(NAMED_MODEL), decode(document))
    assert message in caught.value.message


def test_classifier_answers_become_probabilities_and_labels() -> None:
    signature = signature_from_handler(CLASSIFIER)
    inputs = decode(
        {"inputs": [{"name": "image", "shape": [2, 1], "datatype": "BYTES",
                     "data": ["x", "y"]}]}
    )  # fmt: skip
    work = instances.to_instances(signature, inputs)
    # Not PNG or JPEG: the handler says what it expected (PNG sniffing: the integration tests).
    assert [w.content_type for w in work] == [b"application/octet-stream"] * 2
    answers = [b'{"7": 0.9, "1": 0.1}', b'{"3": 0.6, "8": 0.4}']
    probabilities, labels = instances.to_outputs(signature, answers, None)
    assert probabilities.shape == labels.shape == (2, 2)
    assert labels.data == [b"7", b"1", b"3", b"8"]
    np.testing.assert_allclose(as_numpy(probabilities), [[0.9, 0.1], [0.6, 0.4]], rtol=1e-6)
    top1 = instances.to_outputs(signature, answers, 1)
    assert top1[1].data == [b"7", b"3"]
    with pytest.raises(InvalidRequest, match="from 1 to 2"):
        instances.top_k_parameter(signature, {"top_k": 3})


def test_tensor_answers_stack_in_order_and_must_agree() -> None:
    signature = signature_from_handler(TENSOR_MODEL)
    (output,) = instances.to_outputs(signature, [b"[[1, 2]]", b"[[3, 4.5]]"], None)
    assert output.shape == (2, 1, 2)
    np.testing.assert_array_equal(as_numpy(output), [[[1, 2]], [[3, 4.5]]])
    named = instances.to_outputs(signature, [b'{"a": [1], "b": 2}', b'{"a": [3], "b": 4}'], None)
    assert [(t.name, t.shape) for t in named] == [("a", (2, 1)), ("b", (2,))]
    for answers in ([b"[1, 2]", b"[1]"], [b"[[1, 2], [3]]"], [b"not json"], [b'["a"]']):
        with pytest.raises(UpstreamProtocolError):
            instances.to_outputs(signature, answers, None)
