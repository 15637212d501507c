"""Hooks and golden answers on the real TorchServe behind the real gateway.

- A ``task = "custom"`` archive whose every step is a hook (``detector/``: decode, encode,
  setup reading an extra file) answers through the gateway exactly what its hook functions
  and model give when called here, in-process.
- The project's own archives (digits, digits-tensor, sentiment) record their examples at build
  time and replay them when TorchServe loads them.
- An archive whose recorded answers were edited (and its integrity manifest re-made, so only
  the answers are wrong) refuses to load: the gateway answers ModelLoadFailed and unregisters
  it, the worker's error names the example, and ``make serve``'s start stops with it.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from archive.build import build_models
from archive.spec import DEFAULT_SPEC
from handlers.hooks import HookSettings
from handlers.settings import HandlerSettings
from launcher.errors import LauncherError, ReadyTimeout
from launcher.gateway import Gateway
from launcher.torchserve import TorchServe
from tests.support.servers import running_gateway, running_torchserve
from tests.support.tampering import edit_recorded_answers

pytestmark = pytest.mark.integration

DETECTOR = Path(__file__).parent / "detector"
PROJECT_MODELS = ["digits", "digits-tensor", "sentiment"]
INF_KEY, MGMT_KEY = "inference-key-0123456789", "management-key-0123456789"
INF = {"authorization": f"Bearer {INF_KEY}"}
MGMT = {"authorization": f"Bearer {MGMT_KEY}"}
GATEWAY_ENV = {"GATEWAY_INFERENCE_KEYS": INF_KEY, "GATEWAY_MANAGEMENT_KEYS": MGMT_KEY}
LOG_WAIT_S = 60.0

DETECTOR_SPEC = """
[[model]]
name = "{name}"
model_file = "model.py"
model_class = "TinyDetector"
checkpoint = "weights.pt"
task = "custom"
hooks = "detector_hooks.py"
extra_files = ["detector.json"]
examples = [
  "examples/one.json",
  {{ file = "examples/two.bin", content_type = "application/octet-stream" }},
]

[model.serving]
batch_size = 2
max_batch_delay_ms = 0
"""


@pytest.fixture(scope="module")
def detector_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("detector")
    shutil.copytree(DETECTOR, project, dirs_exist_ok=True)
    torch.manual_seed(0)
    model = detector_module(project).TinyDetector()
    torch.save(model.state_dict(), project / "weights.pt")
    spec = "".join(DETECTOR_SPEC.format(name=name) for name in ("detector", "detector-edited"))
    (project / "models.toml").write_text(spec)
    return project


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, detector_project: Path) -> Path:
    store = tmp_path_factory.mktemp("store")
    build_models(DEFAULT_SPEC, store, PROJECT_MODELS)
    build_models(detector_project / "models.toml", store)
    # Built and valid, then its answers changed as if recorded on another machine: every
    # number of every example moves by 0.5, and the integrity manifest is made anew.
    edit_recorded_answers(store / "detector-edited.mar", shift_scores)
    return store


def shift_scores(example: dict[str, Any]) -> None:
    for detection in example["answer"]:
        detection["score"] += 0.5


@pytest.fixture(scope="module")
def torchserve(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServe]:
    models = [f"{name}.mar" for name in [*PROJECT_MODELS, "detector"]]
    with running_torchserve(store, tmp_path_factory.mktemp("run"), models) as ts:
        yield ts


@pytest.fixture(scope="module")
def gateway(torchserve: TorchServe) -> Iterator[Gateway]:
    with running_gateway(torchserve, env=GATEWAY_ENV) as gw:
        yield gw


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=120.0) as c:
        yield c


def detector_module(project: Path) -> ModuleType:
    return load_module(project / "model.py", "detector_model_under_test")


def load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def in_process(project: Path, body: Any, content_type: str) -> Any:
    """The hooks file's functions and the model, called here: setup, decode, forward, encode."""
    hooks = load_module(project / "detector_hooks.py", "detector_hooks_under_test")
    model = detector_module(project).TinyDetector()
    model.load_state_dict(torch.load(project / "weights.pt", weights_only=True))
    model.eval()
    settings = HookSettings(
        project,
        torch.device("cpu"),
        {"detector.json": project / "detector.json"},
        HandlerSettings("model.py", "TinyDetector", "weights.pt", task="custom", hooks="h.py"),
    )
    hooks.setup(model, settings)
    with torch.inference_mode():
        output = model(hooks.decode(body, content_type)[None])
    row = {key: value[0] for key, value in output.items()}
    return json.loads(json.dumps(hooks.encode(row)))


def logs_mention(torchserve: TorchServe, text: str) -> bool:
    """Whether TorchServe's logs (where a worker's output goes) hold ``text`` (a regular
    expression) yet: they are written asynchronously, so this waits for them a while."""
    pattern = re.compile(text)
    deadline = time.monotonic() + LOG_WAIT_S
    while time.monotonic() < deadline:
        for log in torchserve.log_dir.glob("*.log"):
            if pattern.search(log.read_text(errors="replace")):
                return True
        time.sleep(0.5)
    return False


def test_a_custom_archive_answers_as_its_hooks_called_in_process(
    gateway: Gateway, detector_project: Path, client: httpx.Client
) -> None:
    rng = np.random.default_rng(7)
    url = f"{gateway.url}/predictions/detector"
    for _ in range(4):
        pixels = rng.uniform(-2, 2, 16).astype(np.float32)
        as_json = client.post(url, json={"pixels": pixels.tolist()}, headers=INF)
        raw = client.post(
            url,
            content=pixels.astype("<f4").tobytes(),
            headers={**INF, "content-type": "application/octet-stream"},
        )
        assert as_json.status_code == 200 == raw.status_code, as_json.text + raw.text
        expected = in_process(detector_project, {"pixels": pixels.tolist()}, "application/json")
        assert as_json.json() == expected
        assert raw.json() == in_process(
            detector_project, pixels.astype("<f4").tobytes(), "application/octet-stream"
        )
        assert expected == [] or set(expected[0]) == {"box", "score", "label"}


def test_a_hook_that_refuses_a_body_is_a_400_with_its_message(
    gateway: Gateway, client: httpx.Client
) -> None:
    answer = client.post(
        f"{gateway.url}/predictions/detector", json={"pixels": [1.0, 2.0]}, headers=INF
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["message"] == "expected 16 values, got shape [2]"
    assert "Traceback" not in answer.text


def test_every_project_archive_replayed_its_examples_when_it_loaded(
    torchserve: TorchServe, store: Path, client: httpx.Client
) -> None:
    for name in [*PROJECT_MODELS, "detector"]:
        described = client.get(f"{torchserve.management_url}/models/{name}").json()
        assert [w["status"] for w in described[0]["workers"]] == ["READY"], name
        recorded = json.loads(zipfile.ZipFile(store / f"{name}.mar").read("examples.json"))
        count = len(recorded["examples"])
        assert count >= 2, name
        # The model's worker, after replaying every example the build recorded.
        line = rf"W-\d+-{name}_1\.0-stdout MODEL_LOG - Replayed {count} recorded example\(s\)"
        assert logs_mention(torchserve, line), name


def test_an_archive_whose_recorded_answers_differ_refuses_to_load(
    gateway: Gateway, torchserve: TorchServe, client: httpx.Client
) -> None:
    answer = client.post(
        f"{gateway.url}/models",
        params={"url": "detector-edited.mar", "initial_workers": 1},
        headers=MGMT,
    )
    assert answer.status_code == 500, answer.text
    body = answer.json()
    assert body["type"] == "ModelLoadFailed"
    assert "its workers failed to start" in body["message"]
    assert "detector-edited version 1.0" in body["message"]
    # TorchServe passes no worker's error to its API: the gateway, on the same machine, reads
    # it from the model log (GATEWAY_TORCHSERVE_LOG_DIR, which the launcher sets).
    assert "example 'one.json'" in body["message"], body["message"]
    listed = client.get(f"{gateway.url}/models", headers=MGMT).json()["models"]
    assert "detector-edited" not in {m["modelName"] for m in listed}
    assert logs_mention(
        torchserve, r"example 'one\.json': largest difference 0\.5 at \$\[\d+\]\['score'\]"
    )


def test_the_start_stops_naming_the_example_that_no_longer_matches(
    store: Path, tmp_path: Path
) -> None:
    alone = tmp_path / "store"
    alone.mkdir()
    shutil.copy(store / "detector-edited.mar", alone)
    with (
        pytest.raises(LauncherError) as stopped,
        running_torchserve(alone, tmp_path / "run", ["detector-edited.mar"]),
    ):
        pass
    assert not isinstance(stopped.value, ReadyTimeout), stopped.value
    message = str(stopped.value)
    assert "model detector-edited (detector-edited.mar) failed to load" in message
    assert "example 'one.json'" in message and "example 'two.bin'" in message
