"""What the builds fetch, and who owns what the containers write: static complements to
`make docker-test` (tests/deployment), which builds and runs the same files on a real engine.

- No Docker Hub reference besides the base image's default: no `# syntax=` directive (BuildKit
  would fetch that frontend from Docker Hub before the first instruction), the base image a
  build argument whose default compose and the Dockerfiles agree on.
- pip inside a build may trust an extra CA bundle through a build secret, never an ENV or a
  COPY, so the bundle never lands in a layer.
- Every tmpfs mount belongs to the user the image runs as (a tmpfs is root's, mode 755,
  unless the mount says otherwise).
"""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.docker.deploy_files import (
    DOCKER_DIR,
    global_args,
    interpolate,
    merge_compose,
    parse_dockerfile,
)

COMPOSE: dict[str, Any] = yaml.safe_load((DOCKER_DIR / "compose.yaml").read_text())
LOCAL_BUILD: dict[str, Any] = yaml.safe_load((DOCKER_DIR / "compose.local-build.yaml").read_text())
DOCKERFILES = sorted(DOCKER_DIR.glob("Dockerfile.*"))
SERVICES = COMPOSE["services"]


def dockerfile_of(service: str) -> Path:
    build = SERVICES[service]["build"]
    return (DOCKER_DIR / str(build["context"]) / str(build["dockerfile"])).resolve()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_no_parser_directive_names_a_frontend(dockerfile: Path) -> None:
    for line in dockerfile.read_text().splitlines():
        assert not re.match(r"#\s*syntax\s*=", line, re.IGNORECASE), line


@pytest.mark.parametrize("service", SERVICES)
def test_the_base_image_is_a_build_argument_compose_passes(service: str) -> None:
    dockerfile = dockerfile_of(service)
    defaults = global_args(dockerfile)
    stages = parse_dockerfile(dockerfile)
    names = {stage.name for stage in stages}
    for stage in stages:
        assert stage.declared_base in names or stage.declared_base == "${PYTHON_IMAGE}", (
            f"{dockerfile.name}: FROM {stage.declared_base}: a registry image written in place"
        )
    args = SERVICES[service]["build"]["args"]
    assert set(re.findall(r"\$\{(\w+)", args["PYTHON_IMAGE"])) == {"PYTHON_IMAGE"}
    # Unset, compose builds from the same default a plain `docker build` uses.
    assert interpolate(args["PYTHON_IMAGE"], {}) == defaults["PYTHON_IMAGE"]
    assert interpolate(args["PYTHON_IMAGE"], {"PYTHON_IMAGE": "local/python:3.11"}) == (
        "local/python:3.11"
    )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_pip_trusts_an_extra_ca_only_through_a_build_secret(dockerfile: Path) -> None:
    for stage in parse_dockerfile(dockerfile):
        assert "PIP_CERT" not in stage.env(), "an ENV would keep the bundle's path in the image"
        for copy in stage.all("COPY"):
            assert "pip_ca" not in copy.args and "cert" not in copy.args.lower(), copy.args
        for run in stage.all("RUN"):
            if re.search(r"\bpip (?:install|wheel)\b", run.args) and "--no-index" not in run.args:
                assert run.flags.get("mount") == "type=secret,id=pip_ca", run.args
                assert "export PIP_CERT=/run/secrets/pip_ca" in run.args, run.args


@pytest.mark.parametrize("service", SERVICES)
def test_tmpfs_mounts_belong_to_the_image_user(service: str) -> None:
    final = parse_dockerfile(dockerfile_of(service))[-1]
    uid, gid = final.all("USER")[-1].args.split(":")
    for entry in SERVICES[service]["tmpfs"]:
        target, _, options = entry.partition(":")
        values = dict(option.partition("=")[::2] for option in options.split(","))
        assert (values.get("uid"), values.get("gid")) == (uid, gid), entry
        # /tmp keeps its sticky, world-writable mode; the others are the user's alone.
        assert values.get("mode") == ("1777" if target == "/tmp" else "0700"), entry


def test_torchserve_tmpdir_allows_native_libraries() -> None:
    """java.io.tmpdir (under RUN_DIR) must not be noexec: netty loads its epoll library there."""
    [run_dir] = [e for e in SERVICES["torchserve"]["tmpfs"] if e.startswith("/srv/run:")]
    assert "exec" in run_dir.split(":", 1)[1].split(","), run_dir


def test_local_build_override_only_changes_how_images_are_built() -> None:
    assert set(LOCAL_BUILD) == {"services", "secrets"}
    for name, service in LOCAL_BUILD["services"].items():
        assert set(service) == {"build"}, name
        assert service["build"] == {"network": "host", "secrets": ["pip_ca"]}, name
    assert set(LOCAL_BUILD["services"]) == set(SERVICES)
    # The bundle must be named: a missing variable stops compose with this message.
    with pytest.raises(ValueError, match="PIP_CA_BUNDLE"):
        interpolate(LOCAL_BUILD["secrets"], {})
    merged = interpolate(merge_compose(COMPOSE, LOCAL_BUILD), {"PIP_CA_BUNDLE": "/ca.pem"})
    assert merged["secrets"] == {"pip_ca": {"file": "/ca.pem"}}
    for name in SERVICES:
        # The override adds to the build; the running containers are the base file's.
        assert {k: v for k, v in merged["services"][name].items() if k != "build"} == {
            k: v for k, v in interpolate(SERVICES[name], {}).items() if k != "build"
        }
