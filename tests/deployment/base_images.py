"""Base images made on this machine: no container registry is reachable here.

`debootstrap --variant=minbase` builds a Debian root file system from the archive this
machine's apt uses (kept as a tarball in the cache: it takes about a minute), `docker import`
makes it an image, and base/Dockerfile adds Python 3.11 in a venv: the image the project's
Dockerfiles get as PYTHON_IMAGE in place of Docker Hub's python image (saved in the cache too,
and loaded from there on the next run).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from tests.deployment.engine import PrivateEngine
from tests.deployment.host import codename, debian_archive, run

DEBIAN_IMAGE = "torchserve-gateway-stack/debian:minbase"
PYTHON_IMAGE = "torchserve-gateway-stack/python:3.11-local"
BASE_DOCKERFILE_DIR = Path(__file__).parent / "base"


def debian_tarball(cache: Path) -> Path:
    """A minbase root file system of this machine's Debian release, built once and cached."""
    release = codename()
    tarball = cache / f"debian-{release}-minbase.tar"
    if tarball.is_file():
        return tarball
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="debootstrap-", dir=cache) as scratch:
        rootfs = Path(scratch) / "rootfs"
        run(
            ["debootstrap", "--variant=minbase", release, str(rootfs), debian_archive(release)],
            timeout=900,
        )
        # Downloaded packages are not part of the system; the lists are refreshed by apt.
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        partial = tarball.with_suffix(".partial")
        run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."])
        partial.rename(tarball)
        shutil.rmtree(rootfs, ignore_errors=True)
    return tarball


def python_image(engine: PrivateEngine, tarball: Path, cache: Path) -> str:
    """PYTHON_IMAGE in `engine`: loaded from the cache, or built and then saved there.

    The saved image is keyed by base/Dockerfile's and the tarball's contents, so a change
    to either builds it again.
    """
    key = hashlib.sha256((BASE_DOCKERFILE_DIR / "Dockerfile").read_bytes())
    key.update(tarball.name.encode() + str(tarball.stat().st_size).encode())
    saved = cache / f"python-base-{key.hexdigest()[:16]}.tar"
    if saved.is_file():
        engine.docker("load", "--input", str(saved))
        return PYTHON_IMAGE
    engine.docker("import", str(tarball), DEBIAN_IMAGE)
    engine.docker(
        "build",
        "--build-arg",
        f"DEBIAN_IMAGE={DEBIAN_IMAGE}",
        "--tag",
        PYTHON_IMAGE,
        str(BASE_DOCKERFILE_DIR),
    )
    for stale in cache.glob("python-base-*.tar"):
        stale.unlink()
    partial = saved.with_suffix(".partial")
    engine.docker("save", "--output", str(partial), PYTHON_IMAGE)
    partial.rename(saved)
    return PYTHON_IMAGE
