"""Batching in the gateway (service.batching) with the real TorchServe and the real handler.

Concurrent predictions for a model whose handler reads envelopes go upstream together, and
each client gets exactly the answer it gets when its request is sent alone; models whose
handler doesn't read envelopes are never sent one.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from archive.build import build_models
from archive.spec import DEFAULT_SPEC
from examples.digits.data import load_split, png_bytes
from handlers import envelope
from launcher.gateway import Gateway
from launcher.torchserve import TorchServe
from tests.support.servers import running_gateway, running_torchserve

pytestmark = pytest.mark.integration

REQUESTS = 48


@pytest.fixture(scope="module")
def digits_torchserve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServe]:
    store = tmp_path_factory.mktemp("store")
    build_models(DEFAULT_SPEC, store, ["digits", "digits-tensor"])
    run_dir = tmp_path_factory.mktemp("run")
    with running_torchserve(store, run_dir, models=["digits.mar", "digits-tensor.mar"]) as ts:
        yield ts


@pytest.fixture(scope="module")
def batching_gateway(digits_torchserve: TorchServe) -> Iterator[Gateway]:
    # One request upstream per model at a time: everything concurrent beyond it queues.
    env = {"GATEWAY_BATCH_IN_FLIGHT": "1", "GATEWAY_BATCH_MAX_ITEMS": "8"}
    with running_gateway(digits_torchserve, env=env) as gw:
        yield gw


def upstream_batches(gateway_url: str, model: str) -> tuple[float, float]:
    """(upstream requests, predictions they carried) for `model`, from the gateway's metrics."""
    text = httpx.get(f"{gateway_url}/metrics", timeout=10).text
    count = total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "gateway_upstream_batch_items":
            continue
        for sample in family.samples:
            if sample.labels.get("model") != model:
                continue
            if sample.name.endswith("_count"):
                count = sample.value
            elif sample.name.endswith("_sum"):
                total = sample.value
    return count, total


def npy(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, values.astype(np.float32))
    return buffer.getvalue()


def tensor_requests() -> list[tuple[bytes, str]]:
    rng = np.random.default_rng(7)
    requests: list[tuple[bytes, str]] = []
    for index in range(REQUESTS):
        instance = rng.standard_normal((1, 8, 8))
        if index % 3 == 0:
            requests.append((json.dumps(instance.tolist()).encode(), "application/json"))
        else:
            requests.append((npy(instance), "application/x-npy"))
    requests[5] = (b"[1, 2, 3]", "application/json")  # wrong shape: 400 for it alone
    requests[17] = (b"not json", "application/json")
    return requests


def post_concurrently(url: str, requests: list[tuple[bytes, str]]) -> list[httpx.Response]:
    with httpx.Client(timeout=60, trust_env=False) as client, ThreadPoolExecutor(16) as pool:
        return list(
            pool.map(
                lambda r: client.post(url, content=r[0], headers={"content-type": r[1]}), requests
            )
        )


def post_one_by_one(url: str, requests: list[tuple[bytes, str]]) -> list[httpx.Response]:
    with httpx.Client(timeout=60, trust_env=False) as client:
        return [client.post(url, content=r[0], headers={"content-type": r[1]}) for r in requests]


def _approx(answer: object) -> object:
    if isinstance(answer, dict):
        return {key: pytest.approx(value, abs=1e-5) for key, value in answer.items()}
    return pytest.approx(answer, abs=1e-5)


def same_answer(batched: httpx.Response, alone: httpx.Response) -> None:
    assert batched.status_code == alone.status_code, (batched.text, alone.text)
    assert batched.headers.get("content-type") == alone.headers.get("content-type")
    assert batched.headers.get("cache-control") == alone.headers.get("cache-control")
    if batched.status_code == 200:
        # Same numbers; the last float bits may differ, as between any two batch sizes.
        assert _approx(batched.json()) == alone.json()
    else:
        assert batched.content == alone.content
    assert envelope.ACCEPTS_HEADER not in batched.headers
    assert envelope.ACCEPTS_HEADER not in alone.headers


@pytest.mark.parametrize("model", ["digits-tensor", "digits"])
def test_concurrent_predictions_are_batched_and_answered_as_if_alone(
    batching_gateway: Gateway, digits_torchserve: TorchServe, model: str
) -> None:
    if model == "digits":
        images = load_split().test_images[:REQUESTS]
        requests = [(png_bytes(image), "image/png") for image in images]
        requests[3] = (b"\x89PNG but not really", "image/png")
    else:
        requests = tensor_requests()
    url = f"{batching_gateway.url}/predictions/{model}"
    before = upstream_batches(batching_gateway.url, model)
    batched = post_concurrently(url, requests)
    after = upstream_batches(batching_gateway.url, model)

    upstream_requests, predictions = after[0] - before[0], after[1] - before[1]
    assert predictions == REQUESTS
    assert upstream_requests < REQUESTS  # some went upstream together
    alone = post_one_by_one(url, requests)
    assert upstream_batches(batching_gateway.url, model)[0] - after[0] == REQUESTS
    direct = post_one_by_one(f"{digits_torchserve.inference_url}/predictions/{model}", requests)
    for index, (answer, reference, plain) in enumerate(zip(batched, alone, direct, strict=True)):
        same_answer(answer, reference)
        assert answer.status_code == plain.status_code, index
        if plain.status_code == 200:  # and TorchServe's own answer when it answers alone
            assert _approx(answer.json()) == plain.json(), index
    failed = [i for i, r in enumerate(batched) if r.status_code != 200]
    expected_failures = [3] if model == "digits" else [5, 17]
    assert failed == expected_failures
    for index in failed:
        assert batched[index].status_code == 400
        assert batched[index].json()["type"] == "InvalidModelInput"


def test_clients_cannot_send_the_gateways_own_envelope(batching_gateway: Gateway) -> None:
    body = envelope.pack_request([envelope.Item("application/json", b"[[0.0]]")])
    response = httpx.post(
        f"{batching_gateway.url}/predictions/digits-tensor",
        content=body,
        headers={"content-type": envelope.CONTENT_TYPE},
        timeout=10,
    )
    assert response.status_code == 415
    assert response.json()["type"] == "UnsupportedMediaType"
    assert envelope.CONTENT_TYPE in response.json()["message"]


def test_a_handler_that_does_not_read_envelopes_gets_one_request_at_a_time(
    model_store: Path, torchserve: TorchServe
) -> None:
    # The echo handler answers {"echo_bytes": <body size>}: an envelope would be one body.
    env = {"GATEWAY_BATCH_IN_FLIGHT": "1", "GATEWAY_INFERENCE_KEYS": ""}
    with running_gateway(torchserve, env=env) as gateway:
        bodies = [(f"body {i}".encode(), "application/octet-stream") for i in range(REQUESTS)]
        answers = post_concurrently(f"{gateway.url}/predictions/echo", bodies)
        count, total = upstream_batches(gateway.url, "echo")
    assert [a.status_code for a in answers] == [200] * REQUESTS
    assert [a.json()["echo_bytes"] for a in answers] == [len(body) for body, _ in bodies]
    assert count == total == REQUESTS
