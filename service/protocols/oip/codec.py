"""An inference request's HTTP body to its tensors, and output tensors to a response body.

Without `Inference-Header-Content-Length` the body is the JSON request. With it (Triton's
binary tensor extension, `extension_binary_data.md`) the body is that many bytes of JSON,
then the raw data of every input whose parameters give a `binary_data_size`, in the order
of `inputs`. A response is binary the same way when any output is sent in binary: per output
`parameters.binary_data`, else the request's `parameters.binary_data_output` (tritonclient
sets it when no outputs are named), else JSON. This is the exact inverse of
`tritonclient.http._utils._get_inference_request` and `InferResult`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from service.errors import InvalidRequest
from service.protocols.oip import tensors
from service.protocols.oip.datamodels import InferenceRequest, RequestOutput
from service.protocols.oip.tensors import Datatype, TensorData, TensorError

HEADER_LENGTH = "inference-header-content-length"
BINARY_CONTENT_TYPE = "application/octet-stream"
JSON_CONTENT_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class Tensor:
    """A tensor of a request or a response: name, datatype, shape and data."""

    name: str
    datatype: Datatype
    shape: tuple[int, ...]
    data: TensorData


@dataclass(frozen=True, slots=True)
class DecodedRequest:
    """The request's JSON (validated) and its input tensors, in the request's order."""

    request: InferenceRequest
    inputs: list[Tensor]


@dataclass(frozen=True, slots=True)
class EncodedResponse:
    """A response body, its content type and, when binary, its JSON header's length."""

    body: bytes
    content_type: str
    header_length: int | None


def decode_request(body: bytes, header_length: str | None) -> DecodedRequest:
    """`body` as an inference request; `InvalidRequest` (400) saying what is wrong."""
    split = len(body)
    if header_length is not None:
        if not header_length.strip().isdigit() or int(header_length) > len(body):
            raise InvalidRequest(
                "Inference-Header-Content-Length must be the byte length of the request's JSON."
            )
        split = int(header_length)
    try:
        raw = json.loads(body[:split])
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidRequest("The request's JSON could not be parsed.") from None
    try:
        request = InferenceRequest.model_validate(raw)
    except ValidationError as exc:
        raise InvalidRequest(_validation_message(exc)) from None
    binary = memoryview(body)[split:]
    offset = 0
    inputs: list[Tensor] = []
    for item in request.inputs:
        where = f"input {shown(item.name)}"
        if any(d < 0 for d in item.shape):
            raise InvalidRequest(f"{where}: shape dimensions must be >= 0")
        try:
            dtype = tensors.datatype(item.datatype)
            size = (item.parameters or {}).get("binary_data_size")
            if size is not None:
                if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                    raise TensorError("binary_data_size must be a non-negative integer")
                if offset + size > len(binary):
                    raise TensorError("binary_data_size is past the end of the request body")
                chunk = bytes(binary[offset : offset + size])
                offset += size
                data = tensors.from_binary(dtype, item.shape, chunk)
            elif item.data is None:
                raise TensorError("no 'data' and no binary_data_size")
            else:
                data = tensors.from_json(dtype, item.shape, item.data)
        except TensorError as exc:
            raise InvalidRequest(f"{where}: {exc}") from None
        inputs.append(Tensor(item.name, dtype, tuple(item.shape), data))
    if offset != len(binary):
        raise InvalidRequest(
            f"The request body has {len(binary) - offset} bytes beyond its inputs' "
            "binary_data_size."
        )
    if len({t.name for t in inputs}) != len(inputs):
        raise InvalidRequest("Each input may appear once.")
    return DecodedRequest(request, inputs)


def encode_response(
    header: dict[str, Any],
    outputs: list[Tensor],
    requested: list[RequestOutput] | None,
    parameters: dict[str, Any] | None,
) -> EncodedResponse:
    """The response body: `header` (model_name, model_version, id...) with `outputs`, only
    those `requested` when named (`InvalidRequest` for a name the model has not), each as
    JSON data or binary as asked."""
    default_binary = _flag(parameters, "binary_data_output", False)
    chosen: list[tuple[Tensor, bool]] = []
    if requested:
        by_name = {t.name: t for t in outputs}
        for item in requested:
            tensor = by_name.get(item.name)
            if tensor is None:
                raise InvalidRequest(
                    f"Unknown output {shown(item.name)}; this model's outputs: "
                    f"{', '.join(by_name)}."
                )
            chosen.append((tensor, _flag(item.parameters, "binary_data", default_binary)))
    else:
        chosen = [(tensor, default_binary) for tensor in outputs]
    blobs: list[bytes] = []
    entries: list[dict[str, Any]] = []
    for tensor, binary in chosen:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype.name,
            "shape": list(tensor.shape),
        }
        if binary:
            blob = tensors.to_binary(tensor.datatype, tensor.data)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = tensors.to_json(tensor.datatype, tensor.data)
        entries.append(entry)
    document = json.dumps({**header, "outputs": entries}).encode()
    if not blobs:
        return EncodedResponse(document, JSON_CONTENT_TYPE, None)
    return EncodedResponse(b"".join([document, *blobs]), BINARY_CONTENT_TYPE, len(document))


def shown(name: str) -> str:
    """A client's tensor name as an error message quotes it: at most 64 characters."""
    return repr(name if len(name) <= 64 else name[:61] + "...")


def _flag(parameters: dict[str, Any] | None, name: str, default: bool) -> bool:
    value = (parameters or {}).get(name, default)
    if not isinstance(value, bool):
        raise InvalidRequest(f"The parameter {name!r} must be true or false.")
    return value


def _validation_message(exc: ValidationError) -> str:
    # Where and what, never the client's input echoed back.
    problems = [
        f"{'.'.join(str(part) for part in error.get('loc', ())) or 'body'}: "
        f"{error.get('msg', 'invalid')}"
        for error in exc.errors()[:5]
    ]
    return ("Invalid inference request: " + "; ".join(problems))[:300]
