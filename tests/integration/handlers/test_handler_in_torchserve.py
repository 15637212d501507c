"""The generic handler inside a real TorchServe (Java frontend, Python workers).

The archive is packed with torch-model-archiver alone, around ``handlers/``: this checks the
handler itself, independent of the project's build step.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
import yaml

from handlers import envelope
from handlers.integrity import write_manifest
from handlers.predictor import load_predictor
from handlers.settings import HandlerSettings
from launcher.torchserve import TorchServe
from tests.support.servers import running_gateway, running_torchserve
from tests.unit.handlers.helpers import MODELS_FILE

pytestmark = pytest.mark.integration

HANDLERS = Path(__file__).resolve().parents[3] / "handlers"
OOM_MODEL = Path(__file__).parent / "fixtures" / "oom_model.py"
SETTINGS = {
    "model_file": "model.py",
    "model_class": "TwoLayer",
    "model_kwargs": {"hidden": 6},
    "checkpoint": "weights.pt",
    "task": "tensor",
    "input": {"shape": [4]},
}


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files of the archive: handler package, model file, weights, manifest, config."""
    root = tmp_path_factory.mktemp("staged")
    shutil.copytree(HANDLERS, root / "handlers", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(MODELS_FILE, root / "model.py")
    torch.manual_seed(0)
    from tests.unit.handlers import tiny_models

    model = tiny_models.TwoLayer(hidden=6)
    # Saved the way DataParallel users save: the handler must strip the prefixes.
    torch.save(
        {"model_state_dict": torch.nn.DataParallel(model).state_dict(), "epoch": 1},
        root / "weights.pt",
    )
    config = {
        "minWorkers": 1,
        "maxWorkers": 1,
        "batchSize": 4,
        "maxBatchDelay": 200,
        "responseTimeout": 60,
        "handler": SETTINGS,
    }
    (root / "model-config.yaml").write_text(yaml.safe_dump(config))
    write_manifest(root, ["model.py", "weights.pt"])
    return root


OOM_SETTINGS = {**SETTINGS, "model_class": "RunsOutOfMemory", "model_kwargs": {}}


@pytest.fixture(scope="module")
def staged_oom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files of an archive whose model runs out of device memory on every forward."""
    root = tmp_path_factory.mktemp("staged-oom")
    shutil.copytree(HANDLERS, root / "handlers", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(OOM_MODEL, root / "model.py")
    torch.save({"scale": torch.ones(1)}, root / "weights.pt")
    config = {"minWorkers": 1, "maxWorkers": 1, "batchSize": 1, "handler": OOM_SETTINGS}
    (root / "model-config.yaml").write_text(yaml.safe_dump(config))
    write_manifest(root, ["model.py", "weights.pt"])
    return root


def pack(staged: Path, name: str, store: Path) -> None:
    """`<store>/<name>.mar`: torch-model-archiver around the staged handler package."""
    from model_archiver.model_archiver_config import ModelArchiverConfig
    from model_archiver.model_packaging import generate_model_archive

    extra = ",".join(
        str(staged / n) for n in ("handlers", "model.py", "weights.pt", "integrity.json")
    )
    generate_model_archive(
        ModelArchiverConfig(
            model_name=name,
            handler=str(staged / "handlers" / "torchserve_entry.py"),
            version="1.0",
            extra_files=extra,
            config_file=str(staged / "model-config.yaml"),
            export_path=str(store),
            force=True,
        )
    )


@pytest.fixture(scope="module")
def torchserve(
    staged: Path, staged_oom: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TorchServe]:
    store = tmp_path_factory.mktemp("store")
    pack(staged, "tiny", store)
    pack(staged_oom, "oom", store)
    with running_torchserve(store, tmp_path_factory.mktemp("run")) as server:
        yield server


def test_prediction_equals_the_model_in_process(staged: Path, torchserve: TorchServe) -> None:
    predictor = load_predictor(HandlerSettings.from_dict(SETTINGS), staged)
    instances = [[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]]
    expected = predictor.predict(instances)
    with httpx.Client(timeout=30) as client:
        for instance, answer in zip(instances, expected, strict=True):
            response = client.post(f"{torchserve.inference_url}/predictions/tiny", json=instance)
            assert response.status_code == 200, response.text
            assert response.json() == pytest.approx(answer, abs=1e-6)


def test_a_bad_request_in_a_batch_gets_400_and_the_rest_their_answers(
    staged: Path, torchserve: TorchServe
) -> None:
    # One envelope is one request to TorchServe: its items are one batch by construction,
    # run in one forward pass, where a bad item must fail alone.
    good = [1.0, 1.0, 1.0, 1.0]
    (expected,) = load_predictor(HandlerSettings.from_dict(SETTINGS), staged).predict([good])
    bodies = [good, [1.0, 2.0], good, good]  # one wrong shape
    items = [envelope.Item("application/json", json.dumps(body).encode()) for body in bodies]
    url = f"{torchserve.inference_url}/predictions/tiny"
    with httpx.Client(timeout=30) as client:
        response = client.post(
            url,
            content=envelope.pack_request(items),
            headers={"content-type": envelope.CONTENT_TYPE},
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith(envelope.CONTENT_TYPE)
        answers = envelope.unpack_answers(response.content)
        assert [a.status for a in answers] == [200, 400, 200, 200]
        assert "shape [4]" in json.loads(answers[1].body)["message"]
        for answer in (answers[0], answers[2], answers[3]):
            assert json.loads(answer.body) == pytest.approx(expected, abs=1e-6)
        # The worker survived: it still answers.
        assert client.post(url, json=good).status_code == 200


def test_a_device_out_of_memory_is_torchserves_507_and_the_gateways_model_out_of_memory(
    torchserve: TorchServe,
) -> None:
    with (
        running_gateway(torchserve) as gateway,
        httpx.Client(timeout=30, trust_env=False) as client,
    ):
        direct = client.post(f"{torchserve.inference_url}/predictions/oom", json=[1.0] * 4)
        proxied = client.post(f"{gateway.url}/predictions/oom", json=[1.0] * 4)
        again = client.post(f"{torchserve.inference_url}/predictions/tiny", json=[1.0] * 4)
    assert direct.status_code == 507, direct.text
    assert proxied.status_code == 507, proxied.text
    assert proxied.json()["type"] == "ModelOutOfMemory"
    assert "CUDA" not in proxied.text and "GiB" not in proxied.text
    assert again.status_code == 200  # the worker that ran out of memory is still there
