"""`make docker-test`: the compose deployment built and run on a real, private Docker engine.

    python -m tests.deployment.compose_check

Steps (each printed with its time; a pass/fail count at the end, exit 1 on any failure):
install the engine (Debian docker.io, iptables, nftables, debootstrap) and compose v2 +
buildx (cli_plugins); record the host's network; start a private dockerd (engine); make the
base images (base_images) and gather the build's inputs (build_inputs); build both images
with `make docker-build`; `make up` with test keys on a free port; the checks of
stack_checks through the published port, predictions compared with `make serve`'s
(reference); `make down`; stop the engine, put the host's network back, remove its data.
Run as root. Nothing is skipped: a step that cannot run is a failure that says why.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from tests.deployment import base_images, build_inputs, stack_checks
from tests.deployment.cli_plugins import install_plugins
from tests.deployment.engine import PrivateEngine, disk_use
from tests.deployment.host import apt_install, require_root, run
from tests.deployment.host_network import HostNetwork, require_nftables_backend
from tests.deployment.reference import reference_answers
from tests.deployment.report import CheckFailed, Report, expect
from tests.deployment.requests_used import INFERENCE_KEY, MANAGEMENT_KEY, predictions
from tests.deployment.stack_checks import Stack
from tests.support.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
# Git-ignored: the Debian tarball, the compose/buildx binaries, torch's wheel.
CACHE = REPO_ROOT / ".cache" / "docker-test"
ENGINE_PACKAGES = ("docker.io", "iptables", "nftables", "debootstrap")
BUILD_FILES = "docker/compose.yaml docker/compose.local-build.yaml"
COMPOSE_SERVICES = yaml.safe_load((REPO_ROOT / "docker" / "compose.yaml").read_text())["services"]
GATEWAY_IMAGE: str = COMPOSE_SERVICES["gateway"]["image"]
TORCHSERVE_IMAGE: str = COMPOSE_SERVICES["torchserve"]["image"]


def main() -> int:
    report = Report()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    with tempfile.TemporaryDirectory(prefix="tgs-docker-test-") as scratch:
        try:
            _run(report, Path(scratch))
        except Exception as error:
            report.say(f"stopped early: {type(error).__name__}")
            if not report.failed:  # raised outside any step: still a failure
                report.fail("harness", error)
    print(report.summary(), flush=True)
    return 1 if report.failed else 0


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through every cleanup below


def _run(report: Report, scratch: Path) -> None:
    with report.step("root, Debian packages (docker.io iptables nftables debootstrap)"):
        require_root()
        installed = apt_install(ENGINE_PACKAGES)
        report.note(f"installed: {' '.join(installed) or 'nothing (all present)'}")
        require_nftables_backend()
    docker_config = scratch / "docker-config"
    with report.step("compose v2 and buildx (Debian trixie's packages, private cli-plugins)"):
        report.note(install_plugins(docker_config, CACHE))
    with report.step("host network recorded"):
        before = HostNetwork.capture()
    try:
        # A short path: the engine's unix sockets live under it.
        root = Path(tempfile.mkdtemp(prefix="tgs-dockerd-", dir="/tmp"))
        engine = PrivateEngine(root, docker_config, scratch / "dockerd.log")
        with _engine_running(report, engine):
            _build_and_check(report, engine, scratch)
    finally:
        with report.step("host network as before (sysctls, nftables ruleset, links)"):
            before.restore()
            differences = before.differences(HostNetwork.capture())
            expect(not differences, "; ".join(differences))


@contextlib.contextmanager
def _engine_running(report: Report, engine: PrivateEngine) -> Iterator[None]:
    try:
        with report.step("private dockerd started"):
            report.note(f"dockerd {engine.start()} in {engine.root}")
        yield
    finally:
        with report.step("engine stopped by PID, data root removed"):
            with contextlib.suppress(CheckFailed):
                _remove_containers(engine)
            forced = engine.stop()
            expect(not forced, f"had to force: {forced}")


def _build_and_check(report: Report, engine: PrivateEngine, scratch: Path) -> None:
    with report.step("base images (debootstrap minbase, docker import, Python 3.11 venv)"):
        python_image = base_images.python_image(engine, base_images.debian_tarball(CACHE), CACHE)
    with report.step("build inputs (pip's CA bundle, torch's CPU wheel)"):
        ca_bundle = build_inputs.pip_ca_bundle()
        wheel = build_inputs.torch_wheel(REPO_ROOT / "constraints.txt", CACHE)
        report.note(f"CA bundle {ca_bundle} (a build secret); {wheel.name}")
    tree = _working_copy(scratch / "tree")
    port = free_port()
    (tree / "docker" / ".env").write_text(
        f"GATEWAY_INFERENCE_KEYS={INFERENCE_KEY}\n"
        f"GATEWAY_MANAGEMENT_KEYS={MANAGEMENT_KEY}\n"
        f"GATEWAY_PUBLISHED_PORT={port}\n"
    )
    with build_inputs.serve_index(wheel) as index_url:
        build_env = {
            **engine.env,
            "PYTHON_IMAGE": python_image,
            "TORCH_INDEX_URL": index_url,
            "PIP_CA_BUNDLE": str(ca_bundle),
        }
        with report.step("make docker-build (both images)"):
            run(
                ["make", "-C", str(tree), "docker-build", f"COMPOSE_FILES={BUILD_FILES}"],
                env=build_env,
                timeout=1800,
            )
    for image in (TORCHSERVE_IMAGE, GATEWAY_IMAGE):
        size = int(engine.docker("image", "inspect", "--format", "{{.Size}}", image))
        report.note(f"{image}: {size / 1e6:.0f} MB")
    report.note(f"engine data (tmpfs): {disk_use(engine.root) / 1e9:.1f} GB")
    stack = Stack(engine, f"http://127.0.0.1:{port}")
    try:
        with report.step("make up (returns once both services are healthy)"):
            run(["make", "-C", str(tree), "up"], env=engine.env, timeout=900)
        _check_stack(report, stack, scratch)
    finally:
        with report.step("make down removes the containers"):
            run(["make", "-C", str(tree), "down"], env=engine.env, timeout=300)
            stack_checks.no_container_left(stack)


def _check_stack(report: Report, stack: Stack, scratch: Path) -> None:
    def check(name: str, body: Callable[[], object]) -> bool:
        """A check whose failure is shown with the containers' last lines, as they were."""
        if report.check(name, body):
            return True
        for service in ("torchserve", "gateway"):
            with contextlib.suppress(CheckFailed):
                logs = stack.engine.container_logs(stack.container(service))
                report.say(f"{service}'s last lines:\n{logs}")
        return False

    check(
        "/readyz ready with every archive of the image",
        lambda: stack_checks.readyz_lists_every_archive(stack),
    )
    bodies = predictions()
    reference: list[tuple[int, Any]] = []

    def make_serve_answers() -> None:
        store = scratch / "image_model_store"
        stack.engine.docker("cp", f"{stack.container('torchserve')}:/srv/model_store/.", str(store))
        reference.extend(reference_answers(store, scratch / "reference_run", bodies))

    if check("make serve's answers (the image's archives, outside containers)", make_serve_answers):
        check(
            "predictions equal make serve's (digits, digits-tensor)",
            lambda: stack_checks.predictions_match(stack, bodies, reference),
        )
    check(
        "management with the management key (list, describe, scale)",
        lambda: stack_checks.management_works(stack),
    )
    check(
        "TorchServe publishes nothing, unreachable from the host",
        lambda: stack_checks.torchserve_is_unreachable_from_the_host(stack),
    )
    check(
        "gateway: non-root, read-only root fs, no capabilities",
        lambda: stack_checks.gateway_runs_unprivileged(stack),
    )
    check(
        "gateway image holds no torch",
        lambda: stack_checks.gateway_image_holds_no_torch(stack, GATEWAY_IMAGE),
    )
    if reference:

        def restart() -> None:
            figures = stack_checks.torchserve_restart_is_survived(stack, bodies[0], reference[0][1])
            report.note(", ".join(f"{k} {v:.1f}" for k, v in figures.items()))

        check("TorchServe restarted: 503 while down, answers again, same gateway", restart)


def _working_copy(destination: Path) -> Path:
    """The checkout's files (tracked, and untracked unless ignored) copied to `destination`.

    compose and make run there, so the test's docker/.env never touches the checkout's.
    """
    listing = run(
        [
            "git",
            "-C",
            str(REPO_ROOT),
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ]
    )
    for name in filter(None, listing.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    expect((destination / "docker" / "compose.yaml").is_file(), "no docker/compose.yaml copied")
    return destination


def _remove_containers(engine: PrivateEngine) -> None:
    left = engine.docker("ps", "--all", "--quiet").split()
    if left:
        engine.docker("rm", "--force", "--volumes", *left, timeout=300)


if __name__ == "__main__":
    sys.exit(main())
