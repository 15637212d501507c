"""Naming several backends (service.backends, the settings) and merging their answers
(service.backend_pool). The pool's behaviour against real TorchServes:
tests/integration/service/test_backend_pool.py."""

import asyncio

import pydantic
import pytest

from service import backend_pool
from service.backend_pool import BackendPool, PooledBatcher, merge_descriptions, merge_model_lists
from service.backends import BackendAddress, parse_backend, parse_backends, resolve
from service.metrics import GatewayMetrics
from service.settings import GatewaySettings


class TestParsing:
    def test_a_list_of_backends(self) -> None:
        assert parse_backends(" ts-0.example:8080:8081, 10.0.0.2:9080:9081 ,") == (
            BackendAddress("ts-0.example", 8080, 8081),
            BackendAddress("10.0.0.2", 9080, 9081),
        )

    def test_ipv6_in_brackets(self) -> None:
        backend = parse_backend("[::1]:8080:8081")
        assert backend == BackendAddress("::1", 8080, 8081)
        assert backend.url_host() == "[::1]"

    @pytest.mark.parametrize(
        "text",
        ["ts:8080", "ts:8080:8081:9", "ts:0:8081", "ts:8080:70000", "http://ts:1:2", "ts:a:b"],
    )
    def test_malformed_entries_are_refused(self, text: str) -> None:
        with pytest.raises(ValueError, match="host:inference_port:management_port|1-65535"):
            parse_backend(text)

    def test_a_backend_listed_twice_is_refused(self) -> None:
        with pytest.raises(ValueError, match="twice"):
            parse_backends("a:1:2,a:1:2")

    def test_resolving_a_name_gives_every_address_with_the_ports(self) -> None:
        found = asyncio.run(resolve(BackendAddress("localhost", 8080, 8081)))
        assert BackendAddress("127.0.0.1", 8080, 8081) in found


class TestSettings:
    def test_no_backend_setting_keeps_the_one_default_backend(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for name in ("TORCHSERVE_BACKENDS", "TORCHSERVE_BACKENDS_DNS"):
            monkeypatch.delenv(name, raising=False)
        assert GatewaySettings().pooled is False

    def test_backends_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TORCHSERVE_BACKENDS", "a:1:2,b:3:4")
        monkeypatch.setenv("GATEWAY_HEALTH_S", "0.5")
        settings = GatewaySettings()
        assert settings.pooled and [b.name for b in settings.torchserve_backends] == [
            "a:1:2",
            "b:3:4",
        ]
        assert settings.gateway_health_s == 0.5

    def test_a_dns_name_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TORCHSERVE_BACKENDS_DNS", "torchserve:8080:8081")
        monkeypatch.setenv("GATEWAY_RESOLVE_S", "5")
        settings = GatewaySettings()
        assert settings.torchserve_backends_dns == BackendAddress("torchserve", 8080, 8081)
        assert settings.pooled and settings.gateway_resolve_s == 5

    def test_both_ways_at_once_are_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TORCHSERVE_BACKENDS", "a:1:2")
        monkeypatch.setenv("TORCHSERVE_BACKENDS_DNS", "torchserve:8080:8081")
        with pytest.raises(pydantic.ValidationError, match="not both"):
            GatewaySettings()

    @pytest.mark.parametrize("name", ["TORCHSERVE_BACKENDS", "TORCHSERVE_BACKENDS_DNS"])
    def test_a_malformed_value_stops_the_start(
        self, name: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(name, "torchserve:8080")
        with pytest.raises(pydantic.ValidationError, match="host:inference_port"):
            GatewaySettings()


class TestMerging:
    def test_model_lists_name_each_model_once(self) -> None:
        merged = merge_model_lists(
            [
                {"models": [{"modelName": "b", "modelUrl": "b.mar"}]},
                {"models": [{"modelName": "a", "modelUrl": "a.mar"}, {"modelName": "b"}]},
            ]
        )
        assert merged == {
            "models": [
                {"modelName": "a", "modelUrl": "a.mar"},
                {"modelName": "b", "modelUrl": "b.mar"},
            ]
        }

    def test_descriptions_tag_each_worker_with_its_backend(self) -> None:
        one = [{"modelVersion": "1.0", "minWorkers": 1, "workers": [{"id": "9000"}]}]
        two = [
            {"modelVersion": "1.0", "minWorkers": 1, "workers": [{"id": "9000"}]},
            {"modelVersion": "2.0", "minWorkers": 1, "workers": []},
        ]
        merged = merge_descriptions([("a:1:2", one), ("b:3:4", two)])
        assert [v["modelVersion"] for v in merged] == ["1.0", "2.0"]
        assert merged[0]["workers"] == [
            {"id": "9000", "backend": "a:1:2"},
            {"id": "9000", "backend": "b:3:4"},
        ]
        assert merged[0]["backends"] == ["a:1:2", "b:3:4"]
        assert merged[1]["backends"] == ["b:3:4"]

    def test_a_description_that_is_not_a_list_is_refused(self) -> None:
        with pytest.raises(TypeError):
            merge_descriptions([("a:1:2", {"code": 404})])


def test_with_no_backend_healthy_a_prediction_is_503_naming_their_states() -> None:
    async def scenario() -> str:
        settings = GatewaySettings(torchserve_backends="127.0.0.1:1:2")
        pool = BackendPool(settings, GatewayMetrics())
        for address in settings.torchserve_backends:
            pool._add(address)  # joining, never checked: takes no traffic
        try:
            await PooledBatcher(pool).predict("m", "/predictions/m", [], b"")
        except Exception as error:
            return f"{type(error).__name__} {getattr(error, 'status', '')} {error}"
        finally:
            await pool.aclose()
        return "answered"

    outcome = asyncio.run(scenario())
    assert outcome.startswith("UpstreamUnavailable 503")
    assert "127.0.0.1:1:2 joining" in outcome


def test_dns_answers_add_and_remove_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each lookup's answer is the membership: new addresses join, vanished ones leave."""
    first = (BackendAddress("127.0.0.2", 1, 2), BackendAddress("127.0.0.3", 1, 2))
    second = (BackendAddress("127.0.0.3", 1, 2), BackendAddress("127.0.0.4", 1, 2))
    answers = [first, second]

    async def fake_resolve(spec: BackendAddress) -> tuple[BackendAddress, ...]:
        assert spec == BackendAddress("torchserve", 1, 2)
        return answers.pop(0) if answers else second

    monkeypatch.setattr(backend_pool, "resolve", fake_resolve)

    async def scenario() -> list[set[str]]:
        settings = GatewaySettings(
            torchserve_backends_dns="torchserve:1:2", gateway_resolve_s=0.01, gateway_timeout_s=0.1
        )
        pool = BackendPool(settings, GatewayMetrics())
        pool.start()
        seen: list[set[str]] = []
        try:
            for _ in range(500):
                hosts = {m.address.host for m in pool.members}
                if not seen or seen[-1] != hosts:
                    seen.append(hosts)
                if hosts == {"127.0.0.3", "127.0.0.4"}:
                    break
                await asyncio.sleep(0.01)
        finally:
            await pool.aclose()
        return seen

    seen = asyncio.run(scenario())
    assert {"127.0.0.2", "127.0.0.3"} in seen
    assert seen[-1] == {"127.0.0.3", "127.0.0.4"}
