"""The digits archives, built by ``python -m archive build`` and served by a real TorchServe,
answer held-out digits exactly as the model does in-process."""

from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from archive.build import build_models
from archive.spec import DEFAULT_SPEC, load_spec
from examples.digits.data import load_split, normalise, png_bytes
from handlers.checkpoint import read_state_dict
from handlers.model_loading import build_model, import_model_class
from launcher.torchserve import TorchServe
from tests.support.servers import running_torchserve

pytestmark = pytest.mark.integration

HELD_OUT = 20


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("store")
    # Trains the example first (its `prepare` script) when the checkpoint is missing.
    build_models(DEFAULT_SPEC, store, ["digits", "digits-tensor"])
    return store


@pytest.fixture(scope="module")
def torchserve(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServe]:
    run_dir = tmp_path_factory.mktemp("run")
    with running_torchserve(store, run_dir, models=["digits.mar", "digits-tensor.mar"]) as ts:
        yield ts


@pytest.fixture(scope="module")
def held_out() -> tuple[np.ndarray, np.ndarray]:
    split = load_split()
    return split.test_images[:HELD_OUT], split.test_labels[:HELD_OUT]


@pytest.fixture(scope="module")
def in_process_logits(held_out: tuple[np.ndarray, np.ndarray]) -> torch.Tensor:
    """The trained model run here, on the spec's own checkpoint, outside TorchServe."""
    entry = next(model for model in load_spec(DEFAULT_SPEC).models if model.name == "digits")
    base = DEFAULT_SPEC.parent
    model_class = import_model_class(base / entry.model_file, entry.model_class)
    model, _ = build_model(model_class, read_state_dict(base / entry.checkpoint))
    with torch.inference_mode():
        logits: torch.Tensor = model(normalise(held_out[0]))
    return logits


def post_all(url: str, bodies: list[bytes], content_type: str) -> list[httpx.Response]:
    # Concurrent: TorchServe queues them for its one worker.
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(8) as pool:
        return list(
            pool.map(
                lambda body: client.post(url, content=body, headers={"content-type": content_type}),
                bodies,
            )
        )


def test_served_digits_match_the_model_in_process(
    torchserve: TorchServe,
    held_out: tuple[np.ndarray, np.ndarray],
    in_process_logits: torch.Tensor,
) -> None:
    images, labels = held_out
    bodies = [png_bytes(image) for image in images]
    responses = post_all(f"{torchserve.inference_url}/predictions/digits", bodies, "image/png")
    expected_probabilities = torch.softmax(in_process_logits, dim=1)
    correct = 0
    for index, response in enumerate(responses):
        assert response.status_code == 200, response.text
        answer = response.json()
        assert len(answer) == 3  # top_k = 3 in models.toml
        top = max(answer, key=answer.get)
        expected = int(in_process_logits[index].argmax())
        assert top == str(expected), f"held-out image {index}"
        assert answer[top] == pytest.approx(float(expected_probabilities[index, expected]), 1e-5)
        correct += int(top == str(int(labels[index])))
    assert correct >= HELD_OUT - 1


def test_served_digits_tensor_gives_the_same_logits(
    torchserve: TorchServe,
    held_out: tuple[np.ndarray, np.ndarray],
    in_process_logits: torch.Tensor,
) -> None:
    inputs = normalise(held_out[0]).numpy()
    bodies = []
    for instance in inputs:
        buffer = io.BytesIO()
        np.save(buffer, instance)
        bodies.append(buffer.getvalue())
    responses = post_all(
        f"{torchserve.inference_url}/predictions/digits-tensor", bodies, "application/x-npy"
    )
    for index, response in enumerate(responses):
        assert response.status_code == 200, response.text
        assert response.json() == pytest.approx(in_process_logits[index].tolist(), abs=1e-4)
