"""The stack the v2 tests drive: the digits and sentiment archives built by the project's
build step, a real TorchServe serving them, the real gateway with an inference key.
Module-scoped fixtures: import them into a test module to use them there."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from archive.build import build_models
from archive.spec import DEFAULT_SPEC
from launcher.gateway import Gateway
from launcher.torchserve import TorchServe
from tests.support.servers import running_gateway, running_torchserve

KEY = "v2-inference-key-0123456789"
MODELS = ["digits.mar", "digits-tensor.mar", "sentiment.mar"]


def auth() -> dict[str, str]:
    """The key header, a new dict each call: tritonclient adds its own headers to the dict
    it is given."""
    return {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def oip_torchserve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServe]:
    store = tmp_path_factory.mktemp("store")
    build_models(DEFAULT_SPEC, store, [m.removesuffix(".mar") for m in MODELS])
    with running_torchserve(store, tmp_path_factory.mktemp("run"), MODELS) as ts:
        yield ts


@pytest.fixture(scope="module")
def oip_gateway(oip_torchserve: TorchServe) -> Iterator[Gateway]:
    with running_gateway(oip_torchserve, env={"GATEWAY_INFERENCE_KEYS": KEY}) as gw:
        yield gw
