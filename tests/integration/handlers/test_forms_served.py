"""Every form a model may take, built by ``python -m archive build``, served by a real
TorchServe behind the real gateway, answering as the model does in-process (1e-5).

Requests of different lengths are sent together, so they share TorchServe's batches and the
gateway's envelopes: each must still get exactly the answer it gets alone.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from archive.build import build_models
from archive.spec import DEFAULT_SPEC, load_spec
from handlers.predictor import Predictor, load_predictor
from launcher.gateway import Gateway
from launcher.torchserve import TorchServe
from tests.support.servers import running_gateway, running_torchserve
from tests.unit.archive import test_memory_format as layouts
from tests.unit.archive.helpers import write_spec
from tests.unit.archive.test_forms_build import ENTRIES, project

pytestmark = pytest.mark.integration

SERVED = {
    **{name: ENTRIES[name] for name in ("lengths", "padded", "named", "generate", "dict", "text")},
    # The same text model without padding: one forward pass per length.
    "text-grouped": {
        **ENTRIES["text"],
        "name": "text-grouped",
        "text": {"vocab": "vocab.json", "unk_token": "<unk>", "max_tokens": 9},
    },
    # Two workers, each loading the archive: the warm start must answer alike in both.
    "warm": {**ENTRIES["warm"], "serving": {"batch_size": 2, "workers": 2}},
    # A CNN served channels-last: it answers only when its inputs really arrive so.
    "channels-last": {
        **layouts.entry("channels-last", "NeedsChannelsLast", memory_format="channels_last"),
        "model_file": "conv_models.py",
        "checkpoint": "conv.pt",
    },
}
del SERVED["text-grouped"]["input"]
# Token ids of lengths 3, 5 and 9, and texts of as many tokens (unknown words -> <unk>).
IDS = [[2, 3, 4], [5, 4, 3, 2, 2], [2, 3, 4, 5, 4, 3, 2, 2, 5]]
TEXTS = ["Good bad film", "bad, bad film!", "Good film ! Bad film , good film bad"]


@dataclass
class Served:
    torchserve: TorchServe
    gateway: Gateway
    predictors: dict[str, Predictor]

    def url(self, name: str) -> str:
        return f"{self.gateway.url}/predictions/{name}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("forms")
    base = root / "project"
    project(base)
    shutil.copy(layouts.MODELS, base / "conv_models.py")
    torch.save(layouts.weights(), base / "conv.pt")
    spec = write_spec(base / "models.toml", list(SERVED.values()))
    store = root / "store"
    build_models(spec, store)
    build_models(DEFAULT_SPEC, store, ["sentiment"])  # the text example, from raw text
    predictors = {
        entry.name: load_predictor(entry.handler_settings(), base)
        for entry in load_spec(spec).models
    }
    (sentiment,) = load_spec(DEFAULT_SPEC).select(["sentiment"])
    predictors["sentiment"] = load_predictor(sentiment.handler_settings(), DEFAULT_SPEC.parent)
    with (
        running_torchserve(store, root / "run") as torchserve,
        running_gateway(torchserve) as gateway,
    ):
        yield Served(torchserve, gateway, predictors)


def post_together(
    url: str, bodies: list[tuple[bytes, str]], repeat: int = 4
) -> list[httpx.Response]:
    """Each body ``repeat`` times, all sent at once (so they share batches); in order."""
    many = [body for body in bodies for _ in range(repeat)]

    async def send_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(many))
        async with httpx.AsyncClient(timeout=120, trust_env=False, limits=limits) as client:
            return await asyncio.gather(
                *(
                    client.post(url, content=content, headers={"content-type": kind})
                    for content, kind in many
                )
            )

    return asyncio.run(send_all())


def as_json(value: Any) -> tuple[bytes, str]:
    return json.dumps(value).encode(), "application/json"


def as_text(value: str) -> tuple[bytes, str]:
    return value.encode(), "text/plain"


def assert_answers(responses: list[httpx.Response], expected: list[Any], repeat: int = 4) -> None:
    for index, response in enumerate(responses):
        assert response.status_code == 200, response.text
        want = expected[index // repeat]
        got = response.json()
        if isinstance(want, dict):
            assert list(got) == list(want)  # most likely first
            assert got == pytest.approx(want, abs=1e-5)
        else:
            assert np.allclose(got, want, atol=1e-5), (got, want)


@pytest.mark.parametrize("name", ["lengths", "padded"])
def test_token_ids_of_three_lengths_together(served: Served, name: str) -> None:
    expected = [served.predictors[name].predict([ids])[0] for ids in IDS]
    assert_answers(post_together(served.url(name), [as_json(ids) for ids in IDS]), expected)


def upstream_batches(served: Served, name: str) -> tuple[float, float]:
    """The gateway's (predictions, upstream requests) for model ``name`` so far."""
    text = httpx.get(f"{served.gateway.url}/metrics", timeout=30, trust_env=False).text
    values = {}
    for line in text.splitlines():
        for part in ("sum", "count"):
            if line.startswith(f'gateway_upstream_batch_items_{part}{{model="{name}"}}'):
                values[part] = float(line.rsplit(" ", 1)[1])
    return values.get("sum", 0.0), values.get("count", 0.0)


@pytest.mark.parametrize("name", ["text", "text-grouped"])
def test_text_and_token_ids_together_padded_or_not(served: Served, name: str) -> None:
    bodies = [as_text(text) for text in TEXTS] + [as_json(ids) for ids in IDS]
    alone = [*TEXTS, *IDS]
    expected = [served.predictors[name].predict([body])[0] for body in alone]
    # Until they shared a batch (the gateway sent fewer requests upstream than predictions),
    # which on a busy machine may take a few rounds; every answer is checked every round.
    for rounds in range(1, 6):
        assert_answers(post_together(served.url(name), bodies), expected)
        predictions, requests = upstream_batches(served, name)
        assert predictions == len(bodies) * 4 * rounds
        if requests < predictions:
            break
    assert requests < predictions, "no two of these requests ever shared a batch"


def test_the_text_example_answers_raw_text(served: Served) -> None:
    reviews = [
        "What a wonderful film, the acting was superb!",
        "Boring.",
        "the plot was dull and the ending was predictable , really awful",
        json.dumps("A delightful, moving story"),
    ]
    bodies = [as_text(review) for review in reviews[:3]] + [
        (reviews[3].encode(), "application/json")
    ]
    expected = [served.predictors["sentiment"].predict([review])[0] for review in reviews[:3]]
    expected.append(served.predictors["sentiment"].predict([json.loads(reviews[3])])[0])
    responses = post_together(served.url("sentiment"), bodies)
    assert_answers(responses, expected)
    assert [max(r.json(), key=r.json().get) for r in responses[::4]] == [
        "positive",
        "negative",
        "negative",
        "positive",
    ]


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def test_named_inputs_reach_forward_x_mask(served: Served) -> None:
    instances = [
        {"x": [1.0, 2.0, 4.0], "mask": [1.0, 0.0, 1.0]},
        {"x": [0.5, 0.25, 1.0, 8.0, 2.0], "mask": [1.0, 1.0, 0.0, 1.0, 1.0]},
    ]
    bodies = [as_json(instances[0]), as_json(instances[1])]
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in instances[1].items()}
    bodies.append((npz(**arrays), "application/x-npz"))
    expected = served.predictors["named"].predict([*instances, instances[1]])
    assert expected[:2] == [[5.0, 15.0], [10.75, 32.25]]
    assert_answers(post_together(served.url("named"), bodies), expected)


def test_a_missing_name_is_a_400_that_lists_the_inputs(served: Served) -> None:
    response = httpx.post(served.url("named"), json={"x": [1.0]}, timeout=60, trust_env=False)
    assert response.status_code == 400
    message = response.json()["message"]
    # The gateway's scrubber keeps the media type (it once read it as a file path).
    assert "application/x-npz" in message and "<path>" not in message
    assert "missing 'mask'" in message and "'x': float32 array of shape [-1]" in message


def test_a_token_id_past_the_vocabulary_is_a_400_naming_the_range(served: Served) -> None:
    response = httpx.post(served.url("text"), json=[2, 99], timeout=60, trust_env=False)
    assert response.status_code == 400
    assert "values must lie in [0, 5]; got 99" in response.json()["message"]


def test_a_model_served_through_generate(served: Served) -> None:
    instances = [[0.0, 0.0, 1.0], [3.0, 2.0, -1.0]]
    expected = served.predictors["generate"].predict(instances)
    assert expected[0] == [1.5, 2.0, 2.5, 3.0]
    assert_answers(post_together(served.url("generate"), [as_json(i) for i in instances]), expected)


def test_a_dict_returning_classifier(served: Served) -> None:
    bodies = []
    for pixels in ([[0, 64], [128, 255]], [[255, 0], [0, 10]]):
        buffer = io.BytesIO()
        Image.fromarray(np.array(pixels, dtype=np.uint8), mode="L").save(buffer, "PNG")
        bodies.append(buffer.getvalue())
    expected = served.predictors["dict"].predict([bytearray(body) for body in bodies])
    assert all(isinstance(answer, dict) and len(answer) == 2 for answer in expected)
    responses = post_together(served.url("dict"), [(body, "image/png") for body in bodies])
    assert_answers(responses, expected)


def test_a_channels_last_model_answers_as_the_model_in_process(served: Served) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(layouts.BATCH[1], dtype=np.float32))
    bodies = [as_json(layouts.BATCH[0]), (buffer.getvalue(), "application/x-npy")]
    bodies.append(as_json(layouts.BATCH[2]))
    # The model in its own layout, in this process, with no project code.
    expected = layouts.in_process(layouts.BATCH)
    assert_answers(post_together(served.url("channels-last"), bodies), expected)


def test_a_warm_start_answers_alike_from_two_workers_and_after_a_restart(served: Served) -> None:
    instance = [1.0, -2.0, 3.0, 0.5]
    (expected,) = served.predictors["warm"].predict([instance])
    management = served.torchserve.management_url
    with httpx.Client(timeout=120, trust_env=False) as client:
        workers = client.get(f"{management}/models/warm").json()[0]["workers"]
        assert len(workers) == 2
        before = post_together(served.url("warm"), [as_json(instance)], repeat=24)
        assert_answers(before, [expected], repeat=24)
        # A restart: both workers replaced by new processes, which load the archive again.
        pids = {worker["pid"] for worker in workers}
        response = client.delete(f"{management}/models/warm/1.0")
        assert response.status_code == 200, response.text
        query = {
            "url": "warm.mar",
            "initial_workers": "2",
            "batch_size": "2",
            "max_batch_delay": "0",
            "synchronous": "true",
        }
        response = client.post(f"{management}/models", params=query)
        assert response.status_code == 200, response.text
        workers = client.get(f"{management}/models/warm").json()[0]["workers"]
        assert {worker["pid"] for worker in workers}.isdisjoint(pids)
    after = post_together(served.url("warm"), [as_json(instance)], repeat=24)
    assert_answers(after, [expected], repeat=24)
