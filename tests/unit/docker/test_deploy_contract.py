"""docker/ agrees with the code it deploys: settings' env names, ports, entry commands, files.

Each check reads the compose file, the Dockerfiles, the Makefile and the settings classes
(`launcher.settings.LauncherSettings`, `service.settings.GatewaySettings`): the names and
defaults live in those classes only, never again here.
"""

import contextlib
import http.server
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml
from pydantic_settings import BaseSettings

from launcher import cli, config
from launcher.settings import LauncherSettings
from service.settings import GatewaySettings
from tests.unit.docker.deploy_files import (
    DOCKER_DIR,
    REPO_ROOT,
    Stage,
    dockerignore_excludes,
    interpolate,
    parse_dockerfile,
    read_env_file,
    settings_env_names,
    variables_in,
)

COMPOSE: dict[str, Any] = yaml.safe_load((DOCKER_DIR / "compose.yaml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
ENV_EXAMPLE = DOCKER_DIR / ".env.example"
# Which settings class each service's entry command reads. The gateway's container runs the
# launcher (`python -m launcher gateway`), which starts uvicorn with GatewaySettings.
SETTINGS: dict[str, tuple[type[BaseSettings], ...]] = {
    "torchserve": (LauncherSettings,),
    "gateway": (LauncherSettings, GatewaySettings),
}
# Variables in the images that configure Python, pip or the shell, not this project.
RUNTIME_ENV = {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_DISABLE_PIP_VERSION_CHECK"}
RUNTIME_ENV |= {"HOME"}  # a writable home (a tmpfs) for libraries' caches


def final_stage(service: str) -> Stage:
    return parse_dockerfile(dockerfile_of(service))[-1]


def dockerfile_of(service: str) -> Path:
    build = SERVICES[service]["build"]
    return (DOCKER_DIR / str(build["context"]) / str(build["dockerfile"])).resolve()


def compose_env(service: str) -> dict[str, str]:
    """The service's `environment`, with compose's defaults applied (no variable set)."""
    return {k: str(v) for k, v in interpolate(SERVICES[service]["environment"], {}).items()}


def container_env(service: str) -> dict[str, str]:
    """What the entry command sees: the image's ENV, then `environment` on top.

    The gateway's env_file (docker/.env) sits between the two; it holds the user's keys and
    limits, never the wiring checked here (`test_every_name_in_the_example_env_file_is_read`
    makes sure `environment` overrides nothing in it by accident).
    """
    return final_stage(service).env() | compose_env(service)


def read_settings(
    settings: type[BaseSettings], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Any:
    """`settings` as constructed in a container whose environment is `env`."""
    for name in settings_env_names(settings):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return settings()


def accepted_env_names() -> set[str]:
    names = settings_env_names(LauncherSettings) | settings_env_names(GatewaySettings)
    # Variables the launcher reads outside its settings class (os.environ / getenv).
    for source in (REPO_ROOT / "launcher").glob("*.py"):
        names |= set(re.findall(r"environ(?:\.get)?\(?\[?\"([A-Z_]+)\"", source.read_text()))
    return names


def makefile_recipe(target: str) -> list[str]:
    text = (REPO_ROOT / "Makefile").read_text()
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", text, re.MULTILINE)
    assert match, f"Makefile has no {target} target"
    return [line.strip() for line in match.group(1).splitlines()]


class TestNetworkIsolation:
    def test_torchserve_publishes_nothing_and_sits_on_the_internal_network_only(self) -> None:
        torchserve = SERVICES["torchserve"]
        assert "ports" not in torchserve
        assert "network_mode" not in torchserve
        assert list(torchserve["networks"]) == ["backend"]
        assert COMPOSE["networks"]["backend"]["internal"] is True

    def test_the_gateway_port_is_the_only_published_port(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        published = {name: s["ports"] for name, s in SERVICES.items() if "ports" in s}
        assert list(published) == ["gateway"]
        [port] = interpolate(published["gateway"], {})
        gateway = read_settings(GatewaySettings, container_env("gateway"), monkeypatch)
        assert port["target"] == gateway.gateway_port
        assert port["host_ip"] == "127.0.0.1", "published on loopback unless the env says so"

    def test_the_gateway_bridges_the_internal_network_and_a_routed_one(self) -> None:
        networks = SERVICES["gateway"]["networks"]
        assert "backend" in networks
        assert any(not (COMPOSE["networks"][n] or {}).get("internal") for n in networks)

    def test_both_servers_bind_every_interface_of_their_container(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        torchserve = read_settings(LauncherSettings, container_env("torchserve"), monkeypatch)
        gateway = read_settings(LauncherSettings, container_env("gateway"), monkeypatch)
        assert torchserve.torchserve_bind_host == "0.0.0.0"
        assert gateway.gateway_host == "0.0.0.0"


class TestSettings:
    @pytest.mark.parametrize("service", SERVICES)
    def test_every_variable_set_is_read_by_the_launcher_or_the_gateway(self, service: str) -> None:
        accepted = accepted_env_names()
        image_env = set(final_stage(service).env())
        assert set(compose_env(service)) - accepted == set()
        assert image_env - accepted - RUNTIME_ENV == set()

    def test_every_name_in_the_example_env_file_is_read(self) -> None:
        compose_variables = variables_in(COMPOSE)
        names = set(read_env_file(ENV_EXAMPLE)) | set(read_env_file(ENV_EXAMPLE, commented=True))
        assert names - accepted_env_names() - compose_variables == set()
        # A name the gateway's `environment` sets would be silently ignored in env_file,
        # unless `environment` passes that very variable through.
        for name in names & set(SERVICES["gateway"]["environment"]):
            assert name in variables_in(SERVICES["gateway"]["environment"][name]), name

    def test_example_defaults_are_the_settings_defaults(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        shown = read_env_file(ENV_EXAMPLE, commented=True)
        defaults = read_settings(GatewaySettings, {}, monkeypatch)
        changed = read_settings(GatewaySettings, shown, monkeypatch)
        for name in shown.keys() & settings_env_names(GatewaySettings):
            assert getattr(changed, name.lower()) == getattr(defaults, name.lower()), name

    def test_example_keys_are_placeholders_the_gateway_refuses(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        example = read_env_file(ENV_EXAMPLE)
        keys = {k: v for k, v in example.items() if k.endswith("_KEYS")}
        assert keys, "the example shows where the keys go"
        for name, value in keys.items():
            with pytest.raises(pydantic.ValidationError):
                read_settings(GatewaySettings, {name: value}, monkeypatch)

    def test_torchserve_address_agrees_on_both_sides(self, monkeypatch: pytest.MonkeyPatch) -> None:
        torchserve = read_settings(LauncherSettings, container_env("torchserve"), monkeypatch)
        gateway = read_settings(GatewaySettings, container_env("gateway"), monkeypatch)
        assert gateway.torchserve_host == "torchserve"
        assert "torchserve" in SERVICES
        # Every TorchServe port the gateway knows (it reads no metrics port of its own).
        ports = [name for name in type(gateway).model_fields if name.startswith("torchserve_")]
        ports = [name for name in ports if name.endswith("_port")]
        assert {"torchserve_inference_port", "torchserve_management_port"} <= set(ports)
        for name in ports:
            assert getattr(gateway, name) == getattr(torchserve, name), name

    def test_both_sides_share_one_body_limit(self, monkeypatch: pytest.MonkeyPatch) -> None:
        ts_env, gw_env = compose_env("torchserve"), compose_env("gateway")
        assert ts_env["GATEWAY_MAX_BODY_BYTES"] == gw_env["GATEWAY_MAX_BODY_BYTES"]
        gateway = read_settings(GatewaySettings, {}, monkeypatch)
        assert int(ts_env["GATEWAY_MAX_BODY_BYTES"]) == gateway.gateway_max_body_bytes
        # The launcher sizes TorchServe's limits from the same default when the variable is unset.
        monkeypatch.delenv("GATEWAY_MAX_BODY_BYTES", raising=False)
        assert config.gateway_max_body_bytes() == gateway.gateway_max_body_bytes

    @pytest.mark.parametrize("service", SERVICES)
    def test_the_model_store_is_the_shared_volume(
        self, service: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        env = container_env(service)
        store = read_settings(LauncherSettings, env, monkeypatch).model_store
        [volume] = SERVICES[service]["volumes"]
        assert volume["type"] == "volume"
        assert volume["source"] in COMPOSE["volumes"]
        assert Path(volume["target"]) == store
        # The gateway only checks archive names against it: it must not write there.
        assert volume.get("read_only", False) is (service == "gateway")


class TestHardening:
    @pytest.mark.parametrize("service", SERVICES)
    def test_least_privilege(self, service: str) -> None:
        s = SERVICES[service]
        assert s["read_only"] is True
        assert s["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in s["security_opt"]
        assert s["restart"] in ("always", "unless-stopped", "on-failure")
        assert "privileged" not in s and "cap_add" not in s

    @pytest.mark.parametrize("service", SERVICES)
    def test_runs_as_a_non_root_user(self, service: str) -> None:
        users = final_stage(service).all("USER")
        assert users, "the final stage sets USER"
        user = users[-1].args.split(":")[0]
        assert user not in ("0", "root")

    @pytest.mark.parametrize("service", SERVICES)
    def test_writable_paths_are_tmpfs(self, service: str, monkeypatch: pytest.MonkeyPatch) -> None:
        env = container_env(service)
        tmpfs = [Path(entry.split(":")[0]) for entry in SERVICES[service]["tmpfs"]]
        writable = [Path(env["HOME"])]
        if service == "torchserve":
            writable.append(read_settings(LauncherSettings, env, monkeypatch).run_dir)
        for path in writable:
            assert any(path.is_relative_to(mount) for mount in tmpfs), path

    def test_base_images_are_pinned_and_shared(self) -> None:
        bases = {
            stage.base
            for service in SERVICES
            for stage in parse_dockerfile(dockerfile_of(service))
            if not any(
                stage.base == other.name for other in parse_dockerfile(dockerfile_of(service))
            )
        }
        assert len(bases) == 1, bases
        [base] = bases
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), base

    def test_image_tags_follow_the_project_version(self) -> None:
        pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
        version = pyproject["project"]["version"]
        for service in SERVICES.values():
            assert service["image"].endswith(f":{version}"), service["image"]
        gpu = yaml.safe_load((DOCKER_DIR / "compose.gpu.yaml").read_text())
        assert gpu["services"]["torchserve"]["image"].endswith(f":{version}-gpu")

    def test_no_pip_cache_is_left(self) -> None:
        for service in SERVICES:
            for stage in parse_dockerfile(dockerfile_of(service)):
                for run in stage.all("RUN"):
                    for command in re.findall(r"pip (?:install|wheel)", run.args):
                        assert run.args.count("--no-cache-dir") >= run.args.count(command)


class TestHealthchecks:
    @pytest.mark.parametrize("service", SERVICES)
    def test_compose_runs_the_image_health_check(self, service: str) -> None:
        check = SERVICES[service]["healthcheck"]
        assert check["test"][0] == "CMD"
        assert check["test"][1:] == final_stage(service).exec_form("HEALTHCHECK")
        assert {"interval", "timeout", "retries", "start_period"} <= set(check)

    @pytest.mark.parametrize(
        ("service", "variable", "path"),
        [
            ("torchserve", "TORCHSERVE_INFERENCE_PORT", "/ping"),
            ("gateway", "GATEWAY_PORT", "/readyz"),
        ],
    )
    @pytest.mark.parametrize("status", [200, 503])
    def test_health_check_asks_the_right_port_and_path(
        self, service: str, variable: str, path: str, status: int
    ) -> None:
        """The compose health check, run against a stand-in server: 0 on 200, else not 0."""
        program, *args = SERVICES[service]["healthcheck"]["test"][1:]
        assert program == "python"
        with http_server(status) as (port, paths):
            env = {**os.environ, variable: str(port), "PYTHONPATH": str(REPO_ROOT)}
            # A proxy in the container's environment must not carry the loopback check.
            env |= {"http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
            for name in ("no_proxy", "NO_PROXY"):
                env.pop(name, None)
            result = subprocess.run(
                [sys.executable, *args], env=env, capture_output=True, timeout=30, check=False
            )
        assert paths == [path]
        assert (result.returncode == 0) is (status == 200), result.stderr


@contextlib.contextmanager
def http_server(status: int) -> Iterator[tuple[int, list[str]]]:
    """A loopback HTTP server answering every GET with `status`; yields its port and the paths."""
    paths: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], paths
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class TestEntryCommands:
    def test_images_run_the_pieces_of_make_serve(self) -> None:
        [serve] = makefile_recipe("serve")
        launcher = shlex.split(serve.replace("$(PY)", "python"))
        assert launcher[-1] == "serve"
        for service in SERVICES:
            assert final_stage(service).exec_form("CMD") == [*launcher[:-1], service]
            assert final_stage(service).exec_form("ENTRYPOINT") is None
            assert "command" not in SERVICES[service] and "entrypoint" not in SERVICES[service]

    @pytest.mark.parametrize("command", ["serve", "torchserve", "gateway"])
    def test_the_launcher_declares_the_command(self, command: str) -> None:
        assert cli.parse_args([command]).command == command

    def test_the_launcher_refuses_other_commands(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit):
            cli.parse_args(["both"])
        assert "invalid choice" in capsys.readouterr().err

    def test_archives_are_built_by_the_make_archive_recipe(self) -> None:
        recipe = makefile_recipe("archive")[-1]
        pattern = re.escape(recipe.replace("$(PY)", "python")).replace(
            re.escape("$(MODEL_STORE)"), r"(\S+)"
        )
        stages = parse_dockerfile(dockerfile_of("torchserve"))
        found = [
            (stage.name, match.group(1))
            for stage in stages
            for run in stage.all("RUN")
            if (match := re.search(pattern, run.args))
        ]
        assert len(found) == 1, found
        [(stage_name, built)] = found
        copies = [
            c.args.split() for c in stages[-1].all("COPY") if c.flags.get("from") == stage_name
        ]
        store = stages[-1].env()["MODEL_STORE"]
        assert [built.rstrip("/") + "/", store.rstrip("/") + "/"] in copies

    def test_the_gateway_waits_for_a_healthy_torchserve(self) -> None:
        depends = SERVICES["gateway"]["depends_on"]
        assert depends["torchserve"]["condition"] == "service_healthy"


class TestBuildContext:
    @pytest.mark.parametrize("service", SERVICES)
    def test_every_copy_source_exists_in_the_context(self, service: str) -> None:
        context = (DOCKER_DIR / SERVICES[service]["build"]["context"]).resolve()
        assert context == REPO_ROOT
        ignore = context / ".dockerignore"
        copies = [
            c for stage in parse_dockerfile(dockerfile_of(service)) for c in stage.all("COPY")
        ]
        assert not [
            s for stage in parse_dockerfile(dockerfile_of(service)) for s in stage.all("ADD")
        ]
        sources = [src for c in copies if "from" not in c.flags for src in c.args.split()[:-1]]
        assert sources
        for source in sources:
            path = context / source
            assert path.exists(), f"COPY {source}: no such file in the build context"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            sent = [
                f for f in files if not dockerignore_excludes(ignore, str(f.relative_to(context)))
            ]
            assert sent, f"COPY {source}: .dockerignore keeps all of it out of the context"

    @pytest.mark.parametrize(
        "path",
        [
            ".venv/bin/python",
            ".git/HEAD",
            "run/torchserve/logs/ts_log.log",
            "model_store/digits.mar",
            "docker/.env",
            "launcher/__pycache__/cli.cpython-311.pyc",
            "torchserve_gateway_stack.egg-info/PKG-INFO",
            "examples/digits/model.pt",
            "tests/unit/docker/test_deploy_contract.py",
        ],
    )
    def test_local_state_stays_out_of_the_context(self, path: str) -> None:
        assert dockerignore_excludes(REPO_ROOT / ".dockerignore", path)

    def test_the_env_file_is_never_committed(self) -> None:
        ignored = (DOCKER_DIR / ".gitignore").read_text().split()
        assert ".env" in ignored


class TestMakeTargets:
    def make_n(self, *args: str) -> list[str]:
        make = shutil.which("make")
        assert make, "make is the project's front door: it must be installed"
        result = subprocess.run(
            [make, "-n", "-C", str(REPO_ROOT), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return [line for line in result.stdout.splitlines() if line.startswith("docker")]

    def test_targets_drive_the_checked_compose_file(self) -> None:
        compose = "docker compose -f docker/compose.yaml"
        assert self.make_n("docker-build") == [f"{compose} build"]
        assert self.make_n("up") == [f"{compose} up -d --wait"]
        assert self.make_n("down") == [f"{compose} down"]

    def test_gpu_override_is_one_variable_away(self) -> None:
        files = "COMPOSE_FILES=docker/compose.yaml docker/compose.gpu.yaml"
        assert self.make_n("up", files) == [
            "docker compose -f docker/compose.yaml -f docker/compose.gpu.yaml up -d --wait"
        ]

    def test_docker_test_runs_the_deployment_harness_after_the_suite(self) -> None:
        assert makefile_recipe("docker-test") == ["$(PY) -m tests.deployment.compose_check"]
        ci = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()]
        assert ci.index("make docker-test") > ci.index("make test")
