"""A model whose handler raises in `initialize` (like TorchServe's own `init-error.mar` test
archive, built here) registered through the real gateway in front of the real TorchServe:
an error answer that says the model was unregistered, the model gone from the list, and
`/readyz` still 200 for the others. Registered behind the gateway's back, it makes `/readyz`
say not ready, naming it.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from launcher.gateway import Gateway
from launcher.torchserve import TorchServe
from tests.integration.service.conftest import GATEWAY_ENV, INF, MGMT
from tests.support.servers import running_gateway

pytestmark = pytest.mark.integration

INIT_ERROR_HANDLER = """
from ts.torch_handler.base_handler import BaseHandler


class InitError(BaseHandler):
    def initialize(self, context):
        raise RuntimeError("init-error marker: cannot read /srv/weights/model.pt")
"""
# Long enough that only a worker seen dying, never the grace running out, ends the watch.
LOAD_GRACE_S = 60.0


def build_init_error_archive(store: Path, model: str) -> str:
    from model_archiver.model_archiver_config import ModelArchiverConfig
    from model_archiver.model_packaging import generate_model_archive

    with tempfile.TemporaryDirectory() as staging:
        handler = Path(staging) / "init_error_handler.py"
        handler.write_text(INIT_ERROR_HANDLER)
        config = ModelArchiverConfig(
            model_name=model, handler=str(handler), version="1.0", export_path=str(store)
        )
        generate_model_archive(config)
    return f"{model}.mar"


@pytest.fixture(scope="module")
def guarded(torchserve: TorchServe, model_store: Path) -> Iterator[Gateway]:
    for model in ("init-error", "init-error-async", "init-error-direct"):
        build_init_error_archive(model_store, model)
    env = {**GATEWAY_ENV, "GATEWAY_LOAD_GRACE_S": str(LOAD_GRACE_S)}
    with running_gateway(torchserve, env=env) as gateway:
        yield gateway


def models(client: httpx.Client, gateway: Gateway) -> set[str]:
    answer = client.get(f"{gateway.url}/models", headers=MGMT)
    assert answer.status_code == 200
    return {m["modelName"] for m in answer.json()["models"]}


def assert_load_failed(answer: httpx.Response, model: str) -> str:
    assert answer.status_code == 500, answer.text
    body = answer.json()
    assert set(body) == {"code", "type", "message"} and body["type"] == "ModelLoadFailed"
    assert f"the gateway unregistered {model} version 1.0" in body["message"]
    for leak in ("Traceback", "/srv", "org.pytorch", "java.", "RuntimeError"):
        assert leak not in answer.text
    message: str = body["message"]
    return message


def assert_others_serve(client: httpx.Client, gateway: Gateway, model: str) -> None:
    assert model not in models(client, gateway)
    ready = client.get(f"{gateway.url}/readyz")
    assert ready.status_code == 200, ready.text
    assert model not in ready.json()["models"]
    served = client.post(f"{gateway.url}/predictions/echo", content=b"abc", headers=INF)
    assert served.status_code == 200


def test_a_synchronous_registration_that_fails_is_undone(
    guarded: Gateway, client: httpx.Client
) -> None:
    before = models(client, guarded)
    answer = client.post(
        f"{guarded.url}/models",
        params={"url": "init-error.mar", "initial_workers": 1},
        headers=MGMT,
        timeout=120,
    )
    message = assert_load_failed(answer, "init-error")
    assert "Failed to start workers" in message
    assert models(client, guarded) == before
    assert_others_serve(client, guarded, "init-error")


def test_an_asynchronous_registration_whose_workers_die_is_undone_before_the_grace(
    guarded: Gateway, client: httpx.Client
) -> None:
    before = models(client, guarded)
    start = time.monotonic()
    answer = client.post(
        f"{guarded.url}/models",
        params={"url": "init-error-async.mar", "initial_workers": 1, "synchronous": "false"},
        headers=MGMT,
        timeout=120,
    )
    elapsed = time.monotonic() - start
    message = assert_load_failed(answer, "init-error-async")
    assert "a worker died while loading the model" in message
    assert elapsed < LOAD_GRACE_S, f"answered only when the grace ran out ({elapsed:.1f} s)"
    assert models(client, guarded) == before
    assert_others_serve(client, guarded, "init-error-async")


def test_an_asynchronous_registration_that_loads_answers_once_ready(
    guarded: Gateway, client: httpx.Client
) -> None:
    answer = client.post(
        f"{guarded.url}/models",
        params={"url": "spare.mar", "initial_workers": 1, "synchronous": "false"},
        headers=MGMT,
        timeout=120,
    )
    try:
        assert answer.status_code == 202, answer.text
        described = client.get(f"{guarded.url}/models/spare", headers=MGMT).json()
        assert [w["status"] for w in described[0]["workers"]] == ["READY"]
    finally:
        client.delete(f"{guarded.url}/models/spare/1.0", headers=MGMT)


def test_readyz_names_a_registered_model_without_ready_workers(
    guarded: Gateway, torchserve: TorchServe, client: httpx.Client
) -> None:
    # Registered on TorchServe directly: TorchServe keeps it, with no worker that can serve.
    direct = client.post(
        f"{torchserve.management_url}/models",
        params={"url": "init-error-direct.mar", "initial_workers": 1},
        timeout=120,
    )
    assert direct.status_code == 500, direct.text
    try:
        not_ready = client.get(f"{guarded.url}/readyz")
        assert not_ready.status_code == 503, not_ready.text
        detail = not_ready.json()["models"]["init-error-direct"]
        assert detail["ready"] is False
        assert detail["versions"]["1.0"]["readyWorkers"] == 0
    finally:
        client.delete(f"{torchserve.management_url}/models/init-error-direct/1.0")
    assert client.get(f"{guarded.url}/readyz").status_code == 200
