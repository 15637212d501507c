"""Schemathesis over the gateway's v2 routes (and `/ping`), over real HTTP to the real stack.

The digits archives are served, so generated requests reach real signatures, the codec and
the handler. Bounded: a few dozen examples per operation, no deadline per example. Every
answer must be as documented, none a 5xx, none carrying TorchServe's or Python's internals,
every error in the protocol's `{"error": "..."}` shape.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from launcher.gateway import Gateway
from service.app import create_app
from service.settings import GatewaySettings
from tests.integration.service.oip_stack import KEY, oip_gateway, oip_torchserve

pytestmark = pytest.mark.integration

__all__ = ["oip_gateway", "oip_torchserve"]  # the stack's fixtures, used by name

LEAKS = re.compile(r"org\.pytorch|java\.|Traceback|\w+Exception\b|/tmp/|/home/|\.py\b")


def served_names(document: dict[str, Any]) -> dict[str, Any]:
    """The gateway's OpenAPI with `model` and `version` drawn from served names and one
    unknown each, so that generated requests reach real models (a free-form name is a 404
    almost always); negative cases still get any other string."""
    choices = {"model": ["digits-tensor", "digits", "no-such-model"], "version": ["1.0", "9"]}
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] in choices:
                    parameter["schema"] = {"type": "string", "enum": choices[parameter["name"]]}
    return document


schema = schemathesis.openapi.from_dict(
    served_names(create_app(GatewaySettings()).openapi())
).include(path_regex="^/(v2|ping)")


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_v2_answers_as_documented_never_5xx(case: schemathesis.Case, oip_gateway: Gateway) -> None:
    # "Valid data accepted" is excluded: the schema cannot say which shapes a model takes.
    response = case.call_and_validate(
        base_url=oip_gateway.url,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
        excluded_checks=[positive_data_acceptance],
    )
    assert response.status_code < 500 or case.path in ("/v2/health/ready", "/ping"), response.text[
        :300
    ]
    assert LEAKS.search(response.text) is None, response.text[:300]
    assert response.headers.get("x-request-id")
    if response.status_code >= 400 and case.path.startswith("/v2") and "ready" not in case.path:
        assert set(response.json()) == {"error"}, response.text[:300]
