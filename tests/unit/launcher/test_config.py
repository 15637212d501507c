"""render_torchserve_config: addresses, ports, limits and paths land in TorchServe's config."""

import re
from pathlib import Path

import pytest

from launcher.config import (
    BODY_LIMIT_HEADROOM_BYTES,
    allowed_urls_pattern,
    load_models_value,
    render_torchserve_config,
)
from launcher.settings import LauncherSettings
from service.settings import DEFAULT_MAX_BODY_BYTES


def parse_properties(text: str) -> dict[str, str]:
    """java.util.Properties, as far as our template uses it: key=value, # comments, \\\\."""
    props = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            props[key.strip()] = re.sub(r"\\(.)", r"\1", value.strip())
    return props


@pytest.fixture
def settings(tmp_path: Path) -> LauncherSettings:
    return LauncherSettings(
        torchserve_inference_port=18080,
        torchserve_management_port=18081,
        torchserve_metrics_port=18082,
        torchserve_grpc_inference_port=17070,
        torchserve_grpc_management_port=17071,
        torchserve_worker_port=19000,
        torchserve_workers_per_model=3,
        model_store=tmp_path / "store",
        run_dir=tmp_path / "run",
    )


def test_every_address_is_on_loopback_with_its_port(settings: LauncherSettings) -> None:
    props = parse_properties(render_torchserve_config(settings))

    assert props["inference_address"] == "http://127.0.0.1:18080"
    assert props["management_address"] == "http://127.0.0.1:18081"
    assert props["metrics_address"] == "http://127.0.0.1:18082"
    assert props["grpc_inference_address"] == "127.0.0.1"
    assert props["grpc_inference_port"] == "17070"
    assert props["grpc_management_address"] == "127.0.0.1"
    assert props["grpc_management_port"] == "17071"
    assert props["initial_worker_port"] == "19000"
    addresses = {k: v for k, v in props.items() if k.endswith("_address")}
    assert len(addresses) == 5
    assert all("127.0.0.1" in v for v in addresses.values())


def test_bind_host_applies_to_every_address(settings: LauncherSettings) -> None:
    shared = settings.model_copy(update={"torchserve_bind_host": "0.0.0.0"})
    props = parse_properties(render_torchserve_config(shared))

    addresses = [v for k, v in props.items() if k.endswith("_address")]
    assert len(addresses) == 5
    assert all("0.0.0.0" in v and "127.0.0.1" not in v for v in addresses)


def test_no_placeholder_is_left(settings: LauncherSettings) -> None:
    assert "${" not in render_torchserve_config(settings)


def test_security_and_runtime_switches(settings: LauncherSettings) -> None:
    props = parse_properties(render_torchserve_config(settings))

    assert props["disable_token_authorization"] == "true"
    assert props["enable_model_api"] == "true"
    assert props["install_py_dep_per_model"] == "false"
    assert props["enable_envvars_config"] == "false"
    assert props["metrics_mode"] == "prometheus"
    assert props["default_workers_per_model"] == "3"
    assert 0 < int(props["job_queue_size"]) <= 1000


def test_model_store_and_models(settings: LauncherSettings) -> None:
    store = str(settings.model_store.resolve())

    everything = parse_properties(render_torchserve_config(settings))
    chosen = parse_properties(render_torchserve_config(settings, models=["a.mar", "b.mar"]))

    assert everything["model_store"] == store
    assert everything["load_models"] == "all"
    assert chosen["load_models"] == "a.mar,b.mar"


@pytest.mark.parametrize("bad", ["", "a.mar,b.mar"])
def test_model_names_that_load_models_cannot_hold_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid model archive name"):
        load_models_value([bad])


def test_body_limits_follow_the_gateway_default(
    settings: LauncherSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GATEWAY_MAX_BODY_BYTES", raising=False)
    props = parse_properties(render_torchserve_config(settings))

    assert DEFAULT_MAX_BODY_BYTES == 10485760
    expected = DEFAULT_MAX_BODY_BYTES + BODY_LIMIT_HEADROOM_BYTES
    assert int(props["max_request_size"]) == expected
    assert int(props["max_response_size"]) == expected


def test_body_limits_follow_the_gateway_setting(
    settings: LauncherSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_MAX_BODY_BYTES", "50000000")
    props = parse_properties(render_torchserve_config(settings))

    assert int(props["max_request_size"]) >= 50000000
    assert int(props["max_response_size"]) >= 50000000


def test_an_explicit_body_limit_wins(settings: LauncherSettings) -> None:
    props = parse_properties(render_torchserve_config(settings, max_body_bytes=1000))

    assert int(props["max_request_size"]) == 1000 + BODY_LIMIT_HEADROOM_BYTES


def test_allowed_urls_match_only_archives_in_the_store(settings: LauncherSettings) -> None:
    props = parse_properties(render_torchserve_config(settings))
    pattern = re.compile(props["allowed_urls"])
    store = settings.model_store.resolve().as_posix()

    assert props["allowed_urls"] == allowed_urls_pattern(settings.model_store)
    assert pattern.fullmatch(f"file://{store}/digits.mar")
    for url in [
        f"file://{store}/sub/digits.mar",
        f"file://{store}/../digits.mar",
        f"file://{store}x/digits.mar",
        f"file://{store}/digits.tar.gz",
        "file:///etc/passwd",
        "https://example.com/digits.mar",
        "digits.mar",
    ]:
        assert not pattern.fullmatch(url), url


def test_regex_backslashes_survive_properties_escaping(tmp_path: Path) -> None:
    settings = LauncherSettings(model_store=tmp_path / "a.b+c")
    props = parse_properties(render_torchserve_config(settings))

    assert re.fullmatch(props["allowed_urls"], f"file://{tmp_path}/a.b+c/m.mar")
    assert not re.fullmatch(props["allowed_urls"], f"file://{tmp_path}/aXbbc/m.mar")
