"""What the image builds need from this machine: the CA bundle pip trusts and torch's wheel.

- pip inside a build reaches PyPI only if it trusts the certificate authorities that this
  machine's pip trusts (a TLS-inspecting proxy here). `pip_ca_bundle()` finds that bundle from
  pip's own configuration and environment; the build gets it as a build secret, so it is
  never stored in an image.
- PyTorch's CPU index is not reachable here. `torch_wheel()` has this machine's pip download
  the project's pinned torch (constraints.txt); `serve_index()` serves it as a PEP 503 simple
  index on 127.0.0.1, the build's TORCH_INDEX_URL (the build runs on the host's network).
"""

from __future__ import annotations

import contextlib
import functools
import html
import http.server
import os
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from tests.deployment.host import run
from tests.deployment.report import CheckFailed

SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def pip_ca_bundle() -> Path:
    """The CA bundle this machine's pip verifies PyPI with.

    In pip's own order: PIP_CERT, pip's configuration (`cert`), then the bundles the
    environment names (SSL_CERT_FILE, REQUESTS_CA_BUNDLE), then the system store.

    Raises:
        CheckFailed: none of them names a file that exists.
    """
    candidates = [os.environ.get("PIP_CERT", "")]
    config = run([sys.executable, "-m", "pip", "config", "list"])
    for line in config.splitlines():
        key, _, value = line.partition("=")
        if key.rsplit(".", 1)[-1] == "cert":
            candidates.append(value.strip().strip("'\""))
    candidates += [os.environ.get("SSL_CERT_FILE", ""), os.environ.get("REQUESTS_CA_BUNDLE", "")]
    candidates.append(str(SYSTEM_CA_BUNDLE))
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise CheckFailed("no CA bundle found for pip (PIP_CERT, pip config cert, SSL_CERT_FILE)")


def torch_wheel(constraints: Path, cache: Path) -> Path:
    """The CPU wheel of the torch that `constraints` pins, downloaded once into `cache`.

    Raises:
        CheckFailed: pip found only a CUDA build (no `+cpu` local version): the image would
            carry gigabytes of CUDA libraries.
    """
    wheels = cache / "wheels"
    found = sorted(wheels.glob("torch-*+cpu-*.whl"))
    if not found:
        pin = _pinned("torch", constraints)
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--dest",
                str(wheels),
                "--constraint",
                str(constraints),
                f"torch=={pin}",
            ],
            timeout=1800,
        )
        found = sorted(wheels.glob("torch-*+cpu-*.whl"))
    if not found:
        raise CheckFailed(
            f"pip downloaded no CPU build of torch into {wheels}: give pip PyTorch's CPU index "
            "(pip config set global.extra-index-url https://download.pytorch.org/whl/cpu)"
        )
    return found[-1]


def _pinned(name: str, constraints: Path) -> str:
    for line in constraints.read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement.startswith(f"{name}=="):
            return requirement.split("==", 1)[1]
    raise CheckFailed(f"{constraints} pins no {name}")


@contextlib.contextmanager
def serve_index(wheel: Path) -> Iterator[str]:
    """A simple index holding `wheel` alone, on a free port of 127.0.0.1; yields its URL."""
    project = wheel.name.split("-", 1)[0].lower()
    page = (
        f'<!DOCTYPE html><html><body><a href="{html.escape(wheel.name)}">'
        f"{html.escape(wheel.name)}</a></body></html>\n"
    ).encode()

    class Index(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            path = urllib.parse.unquote(self.path)
            if path.rstrip("/") == f"/simple/{project}":
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)
            elif path == f"/simple/{project}/{wheel.name}":
                self.path = f"/{wheel.name}"
                super().do_GET()
            else:
                self.send_error(404)

        def log_message(self, format: str, *args: object) -> None:
            pass  # pip asks for other projects too: their 404s are expected

    handler = functools.partial(Index, directory=str(wheel.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    finally:
        server.shutdown()
        server.server_close()
