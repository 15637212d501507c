"""The Open Inference Protocol's JSON bodies (`specification/protocol/inference_rest.md`).

Field names, types and optionality are the spec's; docstrings quote it. Requests accept
fields the spec does not name (kserve's `InferenceRESTClient` sends `model_name` in the
request body; Triton's clients may send parameters of their own), and ignore them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# "$parameters = { $parameter, ... }; $parameter = $string : $string | $number | $boolean"
Parameters = dict[str, Any]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ServerLiveResponse(BaseModel):
    """`GET v2/health/live`: `{ "live" : $bool }`."""

    live: bool


class ServerReadyResponse(BaseModel):
    """`GET v2/health/ready`: `{ "ready" : $bool }`."""

    ready: bool


class ModelReadyResponse(BaseModel):
    """`GET v2/models/${MODEL_NAME}[/versions/${MODEL_VERSION}]/ready`:
    `{ "name" : $string, "ready" : $bool }`."""

    name: str
    ready: bool


class ServerMetadataResponse(BaseModel):
    """`GET v2`: `{ "name" : $string, "version" : $string, "extensions" : [ $string, ... ] }`."""

    name: str
    version: str
    extensions: list[str]


class MetadataTensor(BaseModel):
    """`{ "name" : $string, "datatype" : $string, "shape" : [ $number, ... ] }`; "a
    variable-size dimension is represented by a -1 dimension"."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadataResponse(BaseModel):
    """`GET v2/models/${MODEL_NAME}[/versions/${MODEL_VERSION}]`."""

    name: str
    versions: list[str] | None = None
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class RequestInput(_Request):
    """`$request_input`: the tensor's name, shape, datatype, parameters and data (row-major,
    "flattened or nested"); with the binary extension, `parameters.binary_data_size` instead
    of `data`."""

    name: str
    shape: list[int] = Field(max_length=32)
    datatype: str
    parameters: Parameters | None = None
    data: Any = None


class RequestOutput(_Request):
    """`$request_output`: an output to return; `parameters.binary_data` asks for it in binary."""

    name: str
    parameters: Parameters | None = None


class InferenceRequest(_Request):
    """`$inference_request`: `id` (echoed in the response), `parameters`, `inputs`, and the
    `outputs` to return (all when absent)."""

    id: str | None = None
    parameters: Parameters | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    """`$response_output`: `data` absent when the output is sent in binary
    (`parameters.binary_data_size` then gives its size)."""

    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[Any] | None = None


class InferenceResponse(BaseModel):
    """`$inference_response`."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


class ErrorResponse(BaseModel):
    """`$inference_error_response` and every other v2 error: `{ "error": $string }`."""

    error: str
