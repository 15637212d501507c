"""Compose v2 and buildx as docker CLI plugins, from Debian trixie's packages.

Debian bookworm has only compose v1 (1.29), which cannot read `env_file: {path, required}`.
Trixie's `docker-compose` and `docker-buildx` are static Go binaries that run on bookworm:
apt downloads them through a private sources list (trixie, on the archive this machine's
apt already uses), `dpkg -x` unpacks them, and they go under a private
`DOCKER_CONFIG/cli-plugins`. Nothing is installed system-wide.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from tests.deployment.host import codename, debian_archive, run
from tests.deployment.report import CheckFailed

PACKAGES = ("docker-compose", "docker-buildx")
PLUGINS = ("docker-compose", "docker-buildx")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
SUITE = "trixie"


def install_plugins(docker_config: Path, cache: Path) -> str:
    """Compose and buildx under `docker_config/cli-plugins`; returns `docker compose version`.

    The unpacked binaries are kept in `cache`, so a second run downloads nothing.
    """
    plugins_dir = docker_config / "cli-plugins"
    plugins_dir.mkdir(parents=True, exist_ok=True)
    cached = cache / "cli-plugins"
    if not all((cached / name).is_file() for name in PLUGINS):
        _download(cached)
    for name in PLUGINS:
        shutil.copy2(cached / name, plugins_dir / name)
    env = {"DOCKER_CONFIG": str(docker_config)}
    run(["docker", "buildx", "version"], env=env)
    return run(["docker", "compose", "version"], env=env).strip()


def _download(destination: Path) -> None:
    if not KEYRING.is_file():
        raise CheckFailed(
            f"{KEYRING} is missing (Debian's archive keyring): apt cannot check trixie"
        )
    archive = debian_archive(codename())
    with tempfile.TemporaryDirectory(prefix="apt-trixie-") as scratch:
        root = Path(scratch)
        (root / "lists" / "partial").mkdir(parents=True)
        (root / "archives" / "partial").mkdir(parents=True)
        sources = root / "sources.list"
        sources.write_text(f"deb [signed-by={KEYRING}] {archive} {SUITE} main\n")
        options = [
            f"-oDir::Etc::SourceList={sources}",
            "-oDir::Etc::SourceParts=/dev/null",
            f"-oDir::State::Lists={root / 'lists'}",
            f"-oDir::Cache::Archives={root / 'archives'}",
            "-oDir::Cache::pkgcache=",
            "-oDir::Cache::srcpkgcache=",
            # apt drops to _apt for downloads; the scratch folder is root's.
            "-oAPT::Sandbox::User=root",
        ]
        run(["apt-get", *options, "update", "-qq"])
        run(["apt-get", *options, "download", *PACKAGES], cwd=root)
        unpacked = root / "unpacked"
        for deb in sorted(root.glob("*.deb")):
            run(["dpkg-deb", "-x", str(deb), str(unpacked)])
        destination.mkdir(parents=True, exist_ok=True)
        for name in PLUGINS:
            found = list(unpacked.rglob(f"cli-plugins/{name}"))
            if not found:
                raise CheckFailed(f"trixie's {name} package holds no cli-plugins/{name}")
            shutil.copy2(found[0], destination / name)
