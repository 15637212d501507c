"""docker/compose.yaml, alone and with the GPU override merged on, against the Compose schema.

No Docker engine runs here, so `docker compose config` cannot check the files: the
Compose Specification's own JSON schema does, after compose's interpolation and merge.
"""

import json
from typing import Any

import jsonschema
import pytest
import yaml

from tests.unit.docker.deploy_files import (
    COMPOSE_SCHEMA,
    DOCKER_DIR,
    interpolate,
    merge_compose,
    read_env_file,
)


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    if not COMPOSE_SCHEMA.is_file():
        pytest.fail(
            f"the Compose Specification schema is missing: {COMPOSE_SCHEMA} (the shared folder "
            "beside the checkout, ../shared/schemas/compose-spec.json)"
        )
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    assert "draft-07" in schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def load(name: str) -> Any:
    return yaml.safe_load((DOCKER_DIR / name).read_text())


def errors(validator: jsonschema.Draft7Validator, document: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(document)
    ]


# No variables set (every default applies), and the documented example env file.
ENVIRONMENTS = {
    "defaults": {},
    "env-example": read_env_file(DOCKER_DIR / ".env.example")
    | read_env_file(DOCKER_DIR / ".env.example", commented=True),
}


@pytest.mark.parametrize("env", ENVIRONMENTS.values(), ids=ENVIRONMENTS.keys())
def test_compose_file_is_valid(validator: jsonschema.Draft7Validator, env: dict[str, str]) -> None:
    assert errors(validator, interpolate(load("compose.yaml"), env)) == []


@pytest.mark.parametrize("env", ENVIRONMENTS.values(), ids=ENVIRONMENTS.keys())
def test_gpu_override_merged_is_valid(
    validator: jsonschema.Draft7Validator, env: dict[str, str]
) -> None:
    merged = merge_compose(load("compose.yaml"), load("compose.gpu.yaml"))
    assert errors(validator, interpolate(merged, env)) == []
    torchserve = merged["services"]["torchserve"]
    assert torchserve["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    ]
    # The override adds a GPU and changes nothing else of the base's hardening.
    base = load("compose.yaml")["services"]["torchserve"]
    for key in ("networks", "read_only", "cap_drop", "security_opt", "healthcheck", "volumes"):
        assert torchserve[key] == base[key], key
    assert "gpu" not in merged["services"]["gateway"].get("deploy", {})


@pytest.mark.parametrize("env", ENVIRONMENTS.values(), ids=ENVIRONMENTS.keys())
def test_local_build_override_merged_is_valid(
    validator: jsonschema.Draft7Validator, env: dict[str, str]
) -> None:
    merged = merge_compose(load("compose.yaml"), load("compose.local-build.yaml"))
    ca = {"PIP_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"}
    assert errors(validator, interpolate(merged, env | ca)) == []


def test_gpu_override_only_touches_torchserve() -> None:
    assert set(load("compose.gpu.yaml")) == {"services"}
    assert set(load("compose.gpu.yaml")["services"]) == {"torchserve"}


def test_schema_rejects_a_broken_file(validator: jsonschema.Draft7Validator) -> None:
    """The validation above can fail: a misspelt or mistyped attribute is reported."""
    broken = load("compose.yaml")
    broken["services"]["gateway"]["restart_policy"] = "always"
    broken["networks"]["backend"]["internal"] = [True]
    found = errors(validator, broken)
    assert any("restart_policy" in e for e in found), found
    assert any(e.startswith("networks/backend/internal") for e in found), found


class TestMerge:
    """`merge_compose` follows the compose-spec merge rules for the attributes used here."""

    def test_mappings_merge_and_scalars_override(self) -> None:
        base = {"services": {"a": {"image": "x:1", "environment": {"A": "1", "B": "2"}}}}
        over = {"services": {"a": {"image": "x:2", "environment": {"B": "3"}}}}
        assert merge_compose(base, over) == {
            "services": {"a": {"image": "x:2", "environment": {"A": "1", "B": "3"}}}
        }

    def test_sequences_append(self) -> None:
        base = {"services": {"a": {"cap_drop": ["ALL"], "dns": ["1.1.1.1"]}}}
        over = {"services": {"a": {"dns": ["8.8.8.8"]}}}
        assert merge_compose(base, over)["services"]["a"]["dns"] == ["1.1.1.1", "8.8.8.8"]

    def test_commands_and_healthcheck_test_are_replaced(self) -> None:
        base = {"services": {"a": {"command": ["a"], "healthcheck": {"test": ["CMD", "a"]}}}}
        over = {"services": {"a": {"command": ["b"], "healthcheck": {"test": ["CMD", "b"]}}}}
        merged = merge_compose(base, over)["services"]["a"]
        assert merged == {"command": ["b"], "healthcheck": {"test": ["CMD", "b"]}}

    def test_volumes_are_unique_by_target(self) -> None:
        base = {"services": {"a": {"volumes": [{"source": "v", "target": "/m"}]}}}
        over = {"services": {"a": {"volumes": [{"source": "w", "target": "/m"}]}}}
        assert merge_compose(base, over)["services"]["a"]["volumes"] == [
            {"source": "w", "target": "/m"}
        ]


class TestInterpolate:
    def test_defaults_values_and_escapes(self) -> None:
        env = {"SET": "v", "EMPTY": ""}
        assert interpolate("${SET:-d}", env) == "v"
        assert interpolate("${UNSET:-d}", env) == "d"
        assert interpolate("${EMPTY:-d}", env) == "d"
        assert interpolate("${EMPTY-d}", env) == ""
        assert interpolate("$$SET $SET", env) == "$SET v"

    def test_required_variable(self) -> None:
        with pytest.raises(ValueError, match="NEEDED: set it"):
            interpolate({"a": ["${NEEDED:?set it}"]}, {})
