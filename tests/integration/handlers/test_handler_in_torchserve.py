"""The generic handler inside a real TorchServe (Java frontend, Python workers).

The archive is packed with torch-model-archiver alone, around ``handlers/``: this checks the
handler itself, independent of the project's build step.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
import yaml

from handlers.integrity import write_manifest
from handlers.predictor import load_predictor
from handlers.settings import HandlerSettings
from launcher.torchserve import TorchServe
from tests.support.servers import running_torchserve
from tests.unit.handlers.helpers import MODELS_FILE

pytestmark = pytest.mark.integration

HANDLERS = Path(__file__).resolve().parents[3] / "handlers"
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


@pytest.fixture(scope="module")
def torchserve(staged: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServe]:
    from model_archiver.model_archiver_config import ModelArchiverConfig
    from model_archiver.model_packaging import generate_model_archive

    store = tmp_path_factory.mktemp("store")
    extra = ",".join(
        str(staged / n) for n in ("handlers", "model.py", "weights.pt", "integrity.json")
    )
    generate_model_archive(
        ModelArchiverConfig(
            model_name="tiny",
            handler=str(staged / "handlers" / "torchserve_entry.py"),
            version="1.0",
            extra_files=extra,
            config_file=str(staged / "model-config.yaml"),
            export_path=str(store),
            force=True,
        )
    )
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
    good = [1.0, 1.0, 1.0, 1.0]
    (expected,) = load_predictor(HandlerSettings.from_dict(SETTINGS), staged).predict([good])
    bodies = [good, [1.0, 2.0], good, good]  # one wrong shape, sent together to share a batch
    url = f"{torchserve.inference_url}/predictions/tiny"
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(lambda body: client.post(url, json=body), bodies))
    assert [r.status_code for r in responses] == [200, 400, 200, 200]
    assert "shape [4]" in responses[1].json()["message"]
    for response in (responses[0], responses[2], responses[3]):
        assert response.json() == pytest.approx(expected, abs=1e-6)
    # The worker survived: it still answers.
    assert httpx.post(url, json=good, timeout=30).status_code == 200
