"""Over real HTTP, against the real TorchServe: a registration that names two archives is
refused, and neither is registered."""

from __future__ import annotations

import httpx
import pytest

from launcher.gateway import Gateway
from tests.integration.service.conftest import MGMT

pytestmark = pytest.mark.integration


def registered(client: httpx.Client, gateway: Gateway) -> set[str]:
    answer = client.get(f"{gateway.url}/models", headers=MGMT)
    assert answer.status_code == 200
    return {m["modelName"] for m in answer.json()["models"]}


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("url=spare.mar&url=greedy.mar", "url"),
        ("url=spare.mar&initial_workers=1&initial_workers=0", "initial_workers"),
        ("url=spare.mar&batch_size=1&batch_size=4", "batch_size"),
    ],
)
def test_a_repeated_registration_parameter_is_400_and_nothing_is_registered(
    gateway: Gateway, client: httpx.Client, query: str, name: str
) -> None:
    before = registered(client, gateway)
    answer = client.post(f"{gateway.url}/models?{query}", headers=MGMT)
    assert answer.status_code == 400, answer.text
    assert answer.json()["type"] == "InvalidRequest"
    assert f"Repeated query parameter(s): {name};" in answer.json()["message"]
    assert registered(client, gateway) == before
