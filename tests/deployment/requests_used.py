"""The requests the check sends: the same bodies to the container stack and to `make serve`."""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_PNG = REPO_ROOT / "examples" / "digits" / "sample.png"
INFERENCE_KEY = "docker-test-inference-key-0123456789"
MANAGEMENT_KEY = "docker-test-management-key-0123456789"


@dataclass(frozen=True)
class Prediction:
    model: str
    body: bytes
    content_type: str


def predictions() -> list[Prediction]:
    """Both example models: the sample digit and a few fixed-seed images and tensors."""
    generator = random.Random(16)
    images = [SAMPLE_PNG.read_bytes()]
    for _ in range(3):
        pixels = bytes(generator.randrange(256) for _ in range(64))
        buffer = io.BytesIO()
        Image.frombytes("L", (8, 8), pixels).save(buffer, format="PNG")
        images.append(buffer.getvalue())
    tensors = [
        json.dumps([[[round(generator.uniform(-1, 1), 4) for _ in range(8)] for _ in range(8)]])
        for _ in range(3)
    ]
    return [Prediction("digits", body, "image/png") for body in images] + [
        Prediction("digits-tensor", body.encode(), "application/json") for body in tensors
    ]


def predict(client: httpx.Client, base_url: str, prediction: Prediction) -> httpx.Response:
    return client.post(
        f"{base_url}/predictions/{prediction.model}",
        content=prediction.body,
        headers={
            "Content-Type": prediction.content_type,
            "Authorization": f"Bearer {INFERENCE_KEY}",
        },
    )


def answers(base_url: str, bodies: list[Prediction]) -> list[tuple[int, Any]]:
    """(status, JSON answer) for each of `bodies`, sent one after another."""
    with httpx.Client(timeout=60) as client:
        found = []
        for prediction in bodies:
            response = predict(client, base_url, prediction)
            found.append((response.status_code, response.json()))
        return found


def manage(client: httpx.Client, method: str, url: str) -> httpx.Response:
    return client.request(method, url, headers={"Authorization": f"Bearer {MANAGEMENT_KEY}"})
