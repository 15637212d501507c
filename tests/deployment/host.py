"""Commands on this machine: running them, Debian packages, the machine's own apt archive."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.deployment.report import CheckFailed

APT_LOCK = Path("/tmp/apt.lock")  # shared with the other installers on this machine


def run(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 600,
    input_bytes: bytes | None = None,
) -> str:
    """Run `command` and return its stdout.

    Raises:
        CheckFailed: it exited non-zero (the message holds the tail of its output) or ran
            past `timeout` seconds.
    """
    try:
        result = subprocess.run(
            list(command),
            env=None if env is None else {**os.environ, **env},
            cwd=cwd,
            input=input_bytes,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise CheckFailed(f"{' '.join(command)}: still running after {timeout:.0f} s") from error
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).decode(errors="replace")[-3000:]
        raise CheckFailed(f"{' '.join(command)} exited {result.returncode}:\n{tail}")
    return result.stdout.decode(errors="replace")


def require_root() -> None:
    if os.geteuid() != 0:
        raise CheckFailed(
            "a private Docker engine needs root (dockerd, iptables, bridges): run as root"
        )


def missing_packages(packages: Sequence[str]) -> list[str]:
    """The Debian packages of `packages` that are not installed."""
    missing = []
    for package in packages:
        status = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package],
            capture_output=True,
            text=True,
            check=False,
        )
        if "install ok installed" not in status.stdout:
            missing.append(package)
    return missing


def apt_install(packages: Sequence[str]) -> list[str]:
    """Install the missing ones of `packages` with apt-get; returns those it installed.

    Services are never started by the install: on a machine without one, Debian's
    /usr/sbin/policy-rc.d is put in place for the install and removed after.
    """
    if shutil.which("apt-get") is None:
        raise CheckFailed(f"no apt-get on this machine: install {' '.join(packages)} by hand")
    missing = missing_packages(packages)
    if not missing:
        return []
    policy = Path("/usr/sbin/policy-rc.d")
    added_policy = not policy.exists()
    if added_policy:
        # dockerd must not start as a system service: the test starts its own.
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        lock = ["flock", str(APT_LOCK)] if shutil.which("flock") else []
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        run([*lock, "apt-get", "update", "-qq"], env=env)
        run(
            [*lock, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env
        )
    finally:
        if added_policy:
            policy.unlink()
    return missing


_ONE_LINE = re.compile(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)$")


def debian_archive(codename: str) -> str:
    """The Debian archive URI this machine's apt uses for `codename` (main, not security).

    Read from /etc/apt/sources.list and sources.list.d (one-line and deb822 formats), so no
    mirror's name is written anywhere in the repository.

    Raises:
        CheckFailed: no apt source serves `codename`'s main component.
    """
    for uri, suites, components in _apt_sources(Path("/etc/apt")):
        if codename in suites and "main" in components and "security" not in uri:
            return uri.rstrip("/")
    raise CheckFailed(f"no apt source of this machine serves Debian {codename} main")


def _apt_sources(apt_dir: Path) -> list[tuple[str, list[str], list[str]]]:
    found: list[tuple[str, list[str], list[str]]] = []
    one_line = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            if match := _ONE_LINE.match(line.strip()):
                found.append((match[1], [match[2]], match[3].split()))
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if ":" in line and not line.lstrip().startswith("#"):
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split():
                continue
            for uri in fields.get("uris", "").split():
                found.append(
                    (uri, fields.get("suites", "").split(), fields.get("components", "").split())
                )
    return found


def codename() -> str:
    """This machine's Debian codename (VERSION_CODENAME in /etc/os-release)."""
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip('"')
    raise CheckFailed("/etc/os-release names no VERSION_CODENAME: not a Debian machine?")
