"""A real TorchServe and the real gateway (uvicorn subprocess) on free loopback ports.

The archives are built here from the small handlers in `fixtures/` with
torch-model-archiver's Python API, plus the shared echo archive of tests/support.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from launcher.gateway import Gateway
from launcher.torchserve import TorchServe
from tests.support.archives import GREEDY_CONFIG, build_echo_archive
from tests.support.servers import running_gateway, running_torchserve

FIXTURES = Path(__file__).parent / "fixtures"
INF_KEY, MGMT_KEY = "inference-key-0123456789", "management-key-0123456789"
INF = {"authorization": f"Bearer {INF_KEY}"}
MGMT = {"authorization": f"Bearer {MGMT_KEY}"}
BODY_LIMIT = 1024 * 1024
# Generous: a synchronous registration waits for its worker, slow on a loaded 2-core
# machine. The faults that need a short timeout (test_faults.py) set their own.
TIMEOUT_S = 60.0
GATEWAY_ENV = {
    "GATEWAY_INFERENCE_KEYS": INF_KEY,
    "GATEWAY_MANAGEMENT_KEYS": MGMT_KEY,
    "GATEWAY_MAX_BODY_BYTES": str(BODY_LIMIT),
    "GATEWAY_TIMEOUT_S": str(TIMEOUT_S),
}
# Loaded when TorchServe starts; the others are registered by the tests.
STARTUP_MODELS = ["echo.mar", "sleepy.mar", "raising.mar"]


def build_archive(
    store: Path, file_name: str, model: str, handler: str, version: str = "1.0"
) -> Path:
    """Pack `fixtures/<handler>` as model `model` `version` into `<store>/<file_name>`."""
    from model_archiver.model_archiver_config import ModelArchiverConfig
    from model_archiver.model_packaging import generate_model_archive

    staging = store / f".build-{file_name}"
    staging.mkdir(parents=True, exist_ok=True)
    config = ModelArchiverConfig(
        model_name=model,
        handler=str(FIXTURES / handler),
        version=version,
        export_path=str(staging),
        force=True,
    )
    generate_model_archive(config)
    target = store / file_name
    (staging / f"{model}.mar").rename(target)
    shutil.rmtree(staging)
    return target


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("store")
    build_echo_archive(store)
    build_echo_archive(store, "spare")  # registered and removed by the management test
    build_echo_archive(store, "greedy", GREEDY_CONFIG)  # batch 2, delay 0: registration test
    build_archive(store, "adder_v1.mar", "adder", "versioned_handler.py", "1.0")
    build_archive(store, "adder_v2.mar", "adder", "versioned_handler.py", "2.0")
    build_archive(store, "sleepy.mar", "sleepy", "sleep_handler.py")
    build_archive(store, "raising.mar", "raising", "raising_handler.py")
    build_archive(store, "broken.mar", "broken", "broken_load_handler.py")
    build_archive(store, "slow_load.mar", "slow_load", "slow_load_handler.py")
    build_archive(store, "dying.mar", "dying", "dying_handler.py")
    build_echo_archive(store, "idle")  # registered with no worker: ModelBusy
    return store


@pytest.fixture(scope="session")
def torchserve(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServe]:
    run = tmp_path_factory.mktemp("ts")
    with running_torchserve(model_store, run, STARTUP_MODELS, max_body_bytes=BODY_LIMIT) as ts:
        yield ts


@pytest.fixture(scope="session")
def gateway(torchserve: TorchServe) -> Iterator[Gateway]:
    with running_gateway(torchserve, env=GATEWAY_ENV) as gw:
        yield gw


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=30.0) as c:
        yield c
