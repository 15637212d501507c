"""The folder tree is the architecture: these import directions keep it that way.

archive/ (build time) -> handlers/ (model side, torch) ; service/ and launcher/ never touch torch.
The one exception: the gateway imports `handlers.envelope`, the batch wire format both sides
share, which imports only the standard library.
"""

from __future__ import annotations

import ast
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"handlers", "archive", "service", "launcher", "bench", "tests", "examples"}
# Module prefixes each package may import from the others.
ALLOWED = {
    "handlers": set(),
    "archive": {"handlers"},
    "service": {"handlers.envelope"},
    "launcher": {"service"},
}
SHARED_WIRE_FORMAT = ROOT / "handlers" / "envelope.py"
NO_TORCH = ("service", "launcher")


def imported_modules(paths: list[Path]) -> dict[str, set[str]]:
    """Every module (or `from` module + name) imported by `paths`, with the files importing it."""
    found: dict[str, set[str]] = {}
    for path in paths:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def imported_top_levels(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for name, files in imported_modules(list((ROOT / package).rglob("*.py"))).items():
        found.setdefault(name.split(".")[0], set()).update(files)
    return found


def allowed(name: str, prefixes: set[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package: str) -> None:
    imports = imported_modules(list((ROOT / package).rglob("*.py")))
    ours = {name for name in imports if name.split(".")[0] in OURS - {package}}
    refused = {name for name in ours if not allowed(name, ALLOWED[package])}
    assert not refused, {name: imports[name] for name in refused}


def test_the_shared_wire_format_needs_only_the_standard_library() -> None:
    imports = imported_modules([SHARED_WIRE_FORMAT])
    tops = {name.split(".")[0] for name in imports}
    assert tops <= set(sys.stdlib_module_names) | {"__future__"}, imports


@pytest.mark.parametrize("package", NO_TORCH)
def test_gateway_side_never_imports_torch(package: str) -> None:
    imports = imported_top_levels(package)
    assert "torch" not in imports, imports.get("torch")


BLOCKED = ("torch", "archive", "numpy", "PIL")


def test_the_gateway_starts_and_serves_without_torch(tmp_path: Path) -> None:
    # The launcher's own uvicorn command, with torch (and the model side) blocked outright,
    # as in the gateway's own image, which has only handlers/envelope.py of handlers/: the
    # app factory, its lifespan and a prediction's whole path run with them unimportable.
    from launcher.gateway import Gateway, gateway_env_for
    from launcher.settings import LauncherSettings
    from tests.support.ports import free_port, free_ports

    closed = free_ports(2)  # no TorchServe: a prediction must get the gateway's own 503
    settings = LauncherSettings(
        gateway_host="127.0.0.1",
        gateway_port=free_port(),
        torchserve_inference_port=closed[0],
        torchserve_management_port=closed[1],
        model_store=tmp_path,
        run_dir=tmp_path,
    )
    command = Gateway(settings).command()
    assert command[1:3] == ["-m", "uvicorn"], command
    blocked_uvicorn = (
        "import runpy, sys\n"
        f"for name in {BLOCKED!r}:\n"
        "    sys.modules[name] = None\n"
        "sys.argv[0] = 'uvicorn'\n"
        "runpy.run_module('uvicorn', run_name='__main__', alter_sys=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "TORCHSERVE_"))}
    env.update(gateway_env_for(settings))
    output = tmp_path / "gateway.out"
    url = f"http://127.0.0.1:{settings.gateway_port}"
    with output.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", blocked_uvicorn, *command[3:]],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, output.read_text()
            assert time.monotonic() < deadline, output.read_text()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            time.sleep(0.1)
        answer = httpx.post(f"{url}/predictions/m", content=b"x", timeout=30)
        ready = httpx.get(f"{url}/readyz", timeout=30)
    finally:
        process.terminate()
        process.wait(30)
    assert answer.status_code == 503 and answer.json()["type"] == "UpstreamUnavailable"
    assert ready.status_code == 503
    assert "ModuleNotFoundError" not in output.read_text()


def test_gateway_app_builds_without_torch_installed() -> None:
    # Block torch (and the model side) outright, as in the gateway's own image, which has
    # only handlers/envelope.py of handlers/.
    code = (
        "import sys\n"
        "for name in ('torch', 'archive', 'numpy', 'PIL'):\n"
        "    sys.modules[name] = None\n"
        "from service.app import create_app\n"
        "from service.settings import GatewaySettings\n"
        "import launcher.cli\n"
        "create_app(GatewaySettings())\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
