"""The folder tree is the architecture: these import directions keep it that way.

archive/ (build time) -> handlers/ (model side, torch) ; service/ and launcher/ never touch torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"handlers", "archive", "service", "launcher", "bench", "tests", "examples"}
ALLOWED = {
    "handlers": set(),
    "archive": {"handlers"},
    "service": set(),
    "launcher": {"service"},
}
NO_TORCH = ("service", "launcher")


def imported_top_levels(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package: str) -> None:
    imports = imported_top_levels(package)
    ours = {name for name in imports if name in OURS and name != package}
    assert ours <= ALLOWED[package], {name: imports[name] for name in ours - ALLOWED[package]}


@pytest.mark.parametrize("package", NO_TORCH)
def test_gateway_side_never_imports_torch(package: str) -> None:
    imports = imported_top_levels(package)
    assert "torch" not in imports, imports.get("torch")


def test_gateway_app_builds_without_torch_installed() -> None:
    # Block torch (and the model side) outright, as in the gateway's own image.
    code = (
        "import sys\n"
        "for name in ('torch', 'handlers', 'archive', 'numpy'):\n"
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
