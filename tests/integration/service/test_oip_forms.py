"""Named inputs and variable dimensions through the v2 protocol, with tritonclient, against
the real stack: the same small models the handler's own form tests serve (a `forward(x, mask)`
model with two named `[-1]` inputs, a word-average model over int64 ids of any length),
answers equal to `/predictions` for the same instances."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from archive.build import build_models
from launcher.gateway import Gateway
from tests.support.servers import running_gateway, running_torchserve
from tests.unit.archive.helpers import write_spec
from tests.unit.archive.test_forms_build import ENTRIES, project

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("oip-forms")
    project(root / "project")
    spec = write_spec(root / "project" / "models.toml", [ENTRIES["named"], ENTRIES["lengths"]])
    build_models(spec, root / "store")
    with (
        running_torchserve(root / "store", root / "run") as torchserve,
        running_gateway(torchserve) as gw,
    ):
        yield gw


@pytest.fixture
def client(gateway: Gateway) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(gateway.url.removeprefix("http://"), network_timeout=60)
    yield c
    c.close()


def predictions(gateway: Gateway, model: str, bodies: list[object]) -> list[object]:
    with httpx.Client(timeout=60, trust_env=False) as http:
        answers = []
        for body in bodies:
            response = http.post(f"{gateway.url}/predictions/{model}", json=body)
            assert response.status_code == 200, response.text
            answers.append(response.json())
    return answers


def test_metadata_names_the_inputs_and_their_variable_dims(
    client: triton.InferenceServerClient,
) -> None:
    named = client.get_model_metadata("named")
    assert named["inputs"] == [
        {"name": "x", "datatype": "FP32", "shape": [-1, -1]},
        {"name": "mask", "datatype": "FP32", "shape": [-1, -1]},
    ]
    lengths = client.get_model_metadata("lengths")
    assert lengths["inputs"] == [{"name": "input", "datatype": "INT64", "shape": [-1, -1]}]


@pytest.mark.parametrize("binary", [True, False])
def test_named_inputs_equal_predictions(
    client: triton.InferenceServerClient, gateway: Gateway, binary: bool
) -> None:
    x = np.array([[1.0, 2.0, 4.0], [0.5, 0.25, 8.0]], dtype=np.float32)
    mask = np.array([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]], dtype=np.float32)
    inputs = [triton.InferInput("x", [2, 3], "FP32"), triton.InferInput("mask", [2, 3], "FP32")]
    inputs[0].set_data_from_numpy(x, binary_data=binary)
    inputs[1].set_data_from_numpy(mask, binary_data=binary)
    result = client.infer("named", inputs)
    bodies: list[object] = [{"x": x[i].tolist(), "mask": mask[i].tolist()} for i in range(2)]
    expected = predictions(gateway, "named", bodies)
    np.testing.assert_allclose(result.as_numpy("output"), np.asarray(expected), atol=1e-5)


@pytest.mark.parametrize("length", [3, 5, 9])
def test_token_ids_of_any_length_equal_predictions(
    client: triton.InferenceServerClient, gateway: Gateway, length: int
) -> None:
    ids = np.array([[(i * 7 + j) % 6 for j in range(length)] for i in range(4)], dtype=np.int64)
    infer_input = triton.InferInput("input", list(ids.shape), "INT64")
    infer_input.set_data_from_numpy(ids)
    result = client.infer("lengths", [infer_input])
    expected = predictions(gateway, "lengths", [row.tolist() for row in ids])
    np.testing.assert_allclose(result.as_numpy("output"), np.asarray(expected), atol=1e-5)


def test_a_value_out_of_range_fails_the_request_with_the_handlers_400(
    client: triton.InferenceServerClient,
) -> None:
    ids = np.array([[1, 2], [3, 99]], dtype=np.int64)  # the model's range is [0, 5]
    infer_input = triton.InferInput("input", [2, 2], "INT64")
    infer_input.set_data_from_numpy(ids)
    with pytest.raises(triton.InferenceServerException) as caught:
        client.infer("lengths", [infer_input])
    assert caught.value.status() == "400"
    assert caught.value.message().startswith("instance 1 of 2: ")
