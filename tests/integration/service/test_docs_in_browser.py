"""`/docs` as a person sees it: the real gateway's page in headless Chromium (Debian's
`chromium`), offline, its rendered DOM listing every documented operation.

Chromium gets a fresh profile, no network beyond loopback (every other host resolves to
nothing, so a CDN asset could not load), and no background services. The DOM after the
page's scripts ran (`--dump-dom` with a virtual time budget) must hold one operation block
per route of `/openapi.json`; a screenshot goes beside the test's output
(`<pytest tmp dir>/docs.png`, path printed) for a person to look at.
"""

from __future__ import annotations

import contextlib
import html
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from launcher.gateway import Gateway

pytestmark = pytest.mark.integration

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # tests run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Offline: any host but the loopback gateway fails to resolve.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    # Virtual time runs until the page is idle (its spec fetched, Swagger UI rendered).
    "--virtual-time-budget=20000",
    "--window-size=1280,2400",
]
CHROMIUM_TIMEOUT_S = 120


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail(
            "chromium is not installed, so the docs page cannot be checked in a browser: "
            "`apt-get install chromium` (`make test` installs it when apt-get can)"
        )
    return path


def run_chromium(profile: Path, *args: str) -> str:
    command = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    # Its own process group, so Chromium and all its helper processes end with the test.
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=CHROMIUM_TIMEOUT_S)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == 0, stderr[-2000:]
    return stdout


def test_docs_render_every_operation_in_chromium_offline(
    gateway: Gateway, tmp_path: Path, client: httpx.Client
) -> None:
    spec = client.get(f"{gateway.url}/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    operations = {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in {"get", "post", "put", "delete", "patch"}
    }
    assert ("POST", "/predictions/{model}") in operations
    assert ("POST", "/models") in operations

    url = f"{gateway.url}/docs"
    dom = run_chromium(tmp_path / "profile-dom", "--dump-dom", url)
    assert "Unable to render this definition" not in dom
    assert 'class="swagger-ui' in dom
    rendered = {
        (method.upper(), html.unescape(path))
        for method, path in re.findall(
            r'id="operations-[^"]*".*?opblock-summary-method">(\w+)<.*?data-path="([^"]+)"',
            dom,
            flags=re.S,
        )
    }
    assert rendered == operations, (rendered ^ operations, dom[:3000])
    sections = set(re.findall(r'data-tag="([^"]+)"', dom))
    assert {"inference", "management", "health"} <= sections
    external = re.findall(r'(?:src|href)="(https?://(?!127\.0\.0\.1)[^"]+)"', dom)
    assert external == [], external

    screenshot = tmp_path / "docs.png"
    run_chromium(tmp_path / "profile-shot", f"--screenshot={screenshot}", url)
    assert screenshot.stat().st_size > 10_000
    print(f"\nscreenshot of {url}: {screenshot}")
