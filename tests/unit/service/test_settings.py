"""GatewaySettings: env names, defaults, key parsing, validation that never echoes a key."""

import pydantic
import pytest

from service.settings import DEFAULT_MAX_BODY_BYTES, GatewaySettings, UpstreamTransport

KEY = "k" * 20


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in __import__("os").environ if n.startswith(("GATEWAY_", "TORCHSERVE_"))]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("MODEL_STORE", raising=False)


def test_defaults() -> None:
    s = GatewaySettings()
    assert (s.gateway_host, s.gateway_port) == ("127.0.0.1", 8000)
    assert s.torchserve_host == "127.0.0.1"
    assert (s.torchserve_inference_port, s.torchserve_management_port) == (8080, 8081)
    assert s.gateway_max_body_bytes == DEFAULT_MAX_BODY_BYTES == 10485760
    assert s.gateway_inference_keys == () and s.gateway_management_keys == ()
    assert s.gateway_upstream_transport is UpstreamTransport.AIOHTTP
    assert str(s.model_store) == "model_store"


def test_every_name_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "GATEWAY_HOST": "0.0.0.0",
        "GATEWAY_PORT": "9000",
        "TORCHSERVE_HOST": "ts",
        "TORCHSERVE_INFERENCE_PORT": "18080",
        "TORCHSERVE_MANAGEMENT_PORT": "18081",
        "MODEL_STORE": "/srv/store",
        "GATEWAY_INFERENCE_KEYS": f"{KEY}1, {KEY}2",
        "GATEWAY_MANAGEMENT_KEYS": f"{KEY}3",
        "GATEWAY_MAX_BODY_BYTES": "1024",
        "GATEWAY_TIMEOUT_S": "2.5",
        "GATEWAY_CONNECT_TIMEOUT_S": "0.2",
        "GATEWAY_MAX_IN_FLIGHT": "7",
        "GATEWAY_UPSTREAM_CONNECTIONS": "5",
        "GATEWAY_UPSTREAM_TRANSPORT": "httpcore",
        "GATEWAY_READINESS_CONCURRENCY": "3",
        "GATEWAY_READINESS_TIMEOUT_S": "1.5",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = GatewaySettings()
    assert s.gateway_host == "0.0.0.0" and s.gateway_port == 9000
    assert s.inference_url == "http://ts:18080" and s.management_url == "http://ts:18081"
    assert str(s.model_store) == "/srv/store"
    assert s.gateway_inference_keys == (f"{KEY}1", f"{KEY}2")
    assert s.gateway_management_keys == (f"{KEY}3",)
    assert s.gateway_max_body_bytes == 1024 and s.gateway_timeout_s == 2.5
    assert s.gateway_connect_timeout_s == 0.2 and s.gateway_max_in_flight == 7
    assert s.gateway_upstream_connections == 5
    assert s.gateway_upstream_transport is UpstreamTransport.HTTPCORE
    assert s.gateway_readiness_concurrency == 3 and s.gateway_readiness_timeout_s == 1.5


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_PORT", "0"),
        ("TORCHSERVE_INFERENCE_PORT", "70000"),
        ("GATEWAY_MAX_BODY_BYTES", "0"),
        ("GATEWAY_TIMEOUT_S", "-1"),
        ("GATEWAY_MAX_IN_FLIGHT", "0"),
        ("GATEWAY_UPSTREAM_TRANSPORT", "curl"),
    ],
)
def test_invalid_values_fail_at_start_up(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(pydantic.ValidationError):
        GatewaySettings()


def test_a_short_key_is_refused_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_MANAGEMENT_KEYS", f"{KEY},tiny-secret")
    with pytest.raises(pydantic.ValidationError) as info:
        GatewaySettings()
    assert "tiny-secret" not in str(info.value) and KEY not in str(info.value)


def test_keys_never_appear_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_INFERENCE_KEYS", KEY)
    s = GatewaySettings()
    assert KEY not in repr(s) and KEY not in str(s)
