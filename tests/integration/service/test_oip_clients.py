"""The Open Inference Protocol (v2) on the gateway, driven by the clients people use.

tritonclient's HTTP client and kserve's `InferenceRESTClient` against the real stack: the
digits archives built by the project's build step, a real TorchServe, the real gateway.
Every answer is compared with what `POST /predictions` answers for the same instances.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from tritonclient.utils import InferenceServerException

from examples.digits.data import load_split, normalise, png_bytes
from launcher.gateway import Gateway
from tests.integration.service.oip_stack import auth, oip_gateway, oip_torchserve

pytestmark = pytest.mark.integration

__all__ = ["oip_gateway", "oip_torchserve"]  # the stack's fixtures, used by name


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return load_split().test_images[:8]


@pytest.fixture
def client(oip_gateway: Gateway) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(oip_gateway.url.removeprefix("http://"), network_timeout=60)
    yield c
    c.close()


def predictions(gateway: Gateway, model: str, bodies: list[bytes], ctype: str) -> list[object]:
    with httpx.Client(timeout=60, headers=auth()) as http:
        answers = []
        for body in bodies:
            response = http.post(
                f"{gateway.url}/predictions/{model}", content=body, headers={"content-type": ctype}
            )
            assert response.status_code == 200, response.text
            answers.append(response.json())
    return answers


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_health_and_metadata_through_tritonclient(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live(headers=auth())
    assert client.is_server_ready(headers=auth())
    assert client.is_model_ready("digits", headers=auth())
    assert client.is_model_ready("digits-tensor", "1.0", headers=auth())
    assert not client.is_model_ready("digits-tensor", "9.9", headers=auth())
    server = client.get_server_metadata(headers=auth())
    assert "binary_tensor_data" in server["extensions"]
    tensor = client.get_model_metadata("digits-tensor", headers=auth())
    assert tensor["platform"] == "pytorch_torchserve"
    assert tensor["versions"] == ["1.0"]
    assert tensor["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert [o["name"] for o in tensor["outputs"]] == ["output"]
    image = client.get_model_metadata("digits", "1.0", headers=auth())
    assert image["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert image["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "labels", "datatype": "BYTES", "shape": [-1, 3]},
    ]


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("count", [1, 8])
def test_tensor_infer_equals_predictions(
    client: triton.InferenceServerClient,
    oip_gateway: Gateway,
    images: np.ndarray,
    binary: bool,
    count: int,
) -> None:
    batch = normalise(images[:count]).numpy().astype(np.float32)
    infer_input = triton.InferInput("input", list(batch.shape), "FP32")
    infer_input.set_data_from_numpy(batch, binary_data=binary)
    outputs = [triton.InferRequestedOutput("output", binary_data=binary)]
    result = client.infer(
        "digits-tensor", [infer_input], outputs=outputs, request_id="req-7", headers=auth()
    )
    expected = predictions(
        oip_gateway, "digits-tensor", [npy(x) for x in batch], "application/x-npy"
    )
    logits = result.as_numpy("output")
    assert logits.shape == (count, 10)
    np.testing.assert_allclose(logits, np.asarray(expected, dtype=np.float32), atol=1e-5)
    assert result.get_response()["id"] == "req-7"


@pytest.mark.parametrize("count", [1, 8])
def test_image_classifier_infer_equals_predictions(
    client: triton.InferenceServerClient, oip_gateway: Gateway, images: np.ndarray, count: int
) -> None:
    pngs = [png_bytes(image) for image in images[:count]]
    infer_input = triton.InferInput("image", [count], "BYTES")
    infer_input.set_data_from_numpy(np.array(pngs, dtype=np.object_), binary_data=True)
    result = client.infer("digits", [infer_input], headers=auth())  # all outputs, binary
    expected = predictions(oip_gateway, "digits", pngs, "image/png")
    labels = result.as_numpy("labels")
    probabilities = result.as_numpy("probabilities")
    assert labels.shape == probabilities.shape == (count, 3)
    for row, answer in enumerate(expected):
        assert isinstance(answer, dict)
        assert [label.decode() for label in labels[row]] == list(answer)
        np.testing.assert_allclose(probabilities[row], list(answer.values()), atol=1e-5)


def test_top_k_parameter_and_json_outputs(
    client: triton.InferenceServerClient, images: np.ndarray
) -> None:
    infer_input = triton.InferInput("image", [2, 1], "BYTES")
    pngs = np.array([[png_bytes(images[0])], [png_bytes(images[1])]], dtype=np.object_)
    infer_input.set_data_from_numpy(pngs, binary_data=True)
    outputs = [triton.InferRequestedOutput("labels", binary_data=False)]
    result = client.infer(
        "digits", [infer_input], outputs=outputs, parameters={"top_k": 1}, headers=auth()
    )
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["labels"]
    assert response["outputs"][0]["shape"] == [2, 1]
    assert result.as_numpy("probabilities") is None


def test_errors_reach_tritonclient_with_the_gateway_message(
    client: triton.InferenceServerClient, images: np.ndarray
) -> None:
    batch = normalise(images[:2]).numpy().astype(np.float32).reshape(2, 8, 8)
    infer_input = triton.InferInput("input", [2, 8, 8], "FP32")
    infer_input.set_data_from_numpy(batch)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("digits-tensor", [infer_input], headers=auth())
    assert caught.value.status() == "400"
    assert "expected shape [-1, 1, 8, 8]" in caught.value.message()

    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("no-such-model", headers=auth())
    assert caught.value.status() == "404"

    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("digits")  # no key
    assert caught.value.status() == "401"
    assert "Bearer" in caught.value.message()


def test_a_failing_instance_fails_the_request_with_its_status(
    client: triton.InferenceServerClient, images: np.ndarray
) -> None:
    pngs = [png_bytes(images[0]), b"not an image", png_bytes(images[1])]
    infer_input = triton.InferInput("image", [3], "BYTES")
    infer_input.set_data_from_numpy(np.array(pngs, dtype=np.object_))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("digits", [infer_input], headers=auth())
    assert caught.value.status() == "400"
    assert caught.value.message().startswith("instance 1 of 3: ")
    assert "PNG or JPEG" in caught.value.message()


def test_kserve_rest_client(oip_gateway: Gateway, images: np.ndarray) -> None:
    batch = normalise(images[:4]).numpy().astype(np.float32)
    expected = predictions(
        oip_gateway, "digits-tensor", [npy(x) for x in batch], "application/x-npy"
    )

    async def run() -> None:
        config = RESTConfig(protocol="v2", timeout=60)
        async with InferenceRESTClient(config) as kserve:
            assert await kserve.is_server_live(oip_gateway.url, headers=auth())
            assert await kserve.is_server_ready(oip_gateway.url, headers=auth())
            assert await kserve.is_model_ready(oip_gateway.url, "digits-tensor", headers=auth())
            infer_input = InferInput("input", list(batch.shape), "FP32")
            infer_input.set_data_from_numpy(batch, binary_data=False)
            request = InferRequest(model_name="digits-tensor", infer_inputs=[infer_input])
            response = await kserve.infer(
                oip_gateway.url, request, model_name="digits-tensor", headers=auth()
            )
            logits = response.outputs[0].as_numpy()
            np.testing.assert_allclose(logits, np.asarray(expected, dtype=np.float32), atol=1e-5)
            assert response.model_name == "digits-tensor"
            # The binary extension through kserve's client too.
            infer_input = InferInput("input", list(batch.shape), "FP32")
            infer_input.set_data_from_numpy(batch, binary_data=True)
            request = InferRequest(model_name="digits-tensor", infer_inputs=[infer_input])
            response = await kserve.infer(
                oip_gateway.url, request, model_name="digits-tensor", headers=auth()
            )
            np.testing.assert_allclose(
                response.outputs[0].as_numpy(), np.asarray(expected, np.float32), atol=1e-5
            )

    asyncio.run(run())


def test_v2_routes_are_counted_ping_answers(oip_gateway: Gateway) -> None:
    ping = httpx.get(f"{oip_gateway.url}/ping", timeout=30)
    assert ping.status_code == 200
    assert ping.json() == {"status": "Healthy"}
    metrics = httpx.get(f"{oip_gateway.url}/metrics", timeout=30).text
    assert 'route="/v2/models/{model}/infer"' in metrics
    not_found = httpx.get(f"{oip_gateway.url}/v2/nothing", headers=auth(), timeout=30)
    assert not_found.status_code == 404
    assert set(not_found.json()) == {"error"}
    assert not_found.headers["x-request-id"]


def batch_items(gateway: Gateway, model: str) -> tuple[float, float]:
    """(upstream requests, predictions in them) for `model`, from the gateway's metrics."""
    text = httpx.get(f"{gateway.url}/metrics", timeout=30).text
    values = {}
    for line in text.splitlines():
        for kind in ("count", "sum"):
            if line.startswith(f'gateway_upstream_batch_items_{kind}{{model="{model}"}}'):
                values[kind] = float(line.rsplit(" ", 1)[1])
    return values.get("count", 0.0), values.get("sum", 0.0)


def test_instances_of_one_request_go_upstream_in_one_envelope(
    client: triton.InferenceServerClient, oip_gateway: Gateway, images: np.ndarray
) -> None:
    def infer(count: int) -> None:
        batch = normalise(images[:count]).numpy().astype(np.float32)
        infer_input = triton.InferInput("input", list(batch.shape), "FP32")
        infer_input.set_data_from_numpy(batch)
        client.infer("digits-tensor", [infer_input], headers=auth())

    infer(1)  # the gateway learns that the handler reads envelopes
    before = batch_items(oip_gateway, "digits-tensor")
    infer(8)
    after = batch_items(oip_gateway, "digits-tensor")
    assert (after[0] - before[0], after[1] - before[1]) == (1, 8)


@pytest.mark.parametrize("binary", [True, False])
def test_text_classifier_infer_equals_predictions(
    client: triton.InferenceServerClient, oip_gateway: Gateway, binary: bool
) -> None:
    texts = ["a great and wonderful film", "dull, boring: awful.", "héllo unknown words"]
    infer_input = triton.InferInput("text", [len(texts), 1], "BYTES")
    array = np.array([[t.encode()] for t in texts], dtype=np.object_)
    infer_input.set_data_from_numpy(array, binary_data=binary)
    outputs = [
        triton.InferRequestedOutput(name, binary_data=binary)
        for name in ("labels", "probabilities")
    ]
    result = client.infer("sentiment", [infer_input], outputs=outputs, headers=auth())
    expected = predictions(
        oip_gateway, "sentiment", [t.encode() for t in texts], "text/plain; charset=utf-8"
    )
    labels = result.as_numpy("labels")
    probabilities = result.as_numpy("probabilities")
    assert labels.shape == probabilities.shape == (3, 2)
    for row, answer in enumerate(expected):
        assert isinstance(answer, dict)
        got = [label.decode() if isinstance(label, bytes) else label for label in labels[row]]
        assert got == list(answer)
        np.testing.assert_allclose(probabilities[row], list(answer.values()), atol=1e-5)
