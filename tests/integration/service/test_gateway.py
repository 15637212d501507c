"""The real gateway in front of the real TorchServe: proxying, versions, management, keys,
SSRF, limits and readiness."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from launcher.gateway import Gateway
from launcher.torchserve import TorchServe
from tests.integration.service.conftest import BODY_LIMIT, INF, INF_KEY, MGMT
from tests.support.servers import running_gateway

INF_HEADER = f"Authorization: Bearer {INF_KEY}"

pytestmark = pytest.mark.integration


def assert_error(response: httpx.Response, status: int, type_: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "type", "message"}
    assert (body["code"], body["type"]) == (status, type_)


def poll(check: object, timeout: float = 60.0, what: str = "condition") -> None:
    """Call `check()` until it returns true, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_prediction_through_the_gateway_equals_a_direct_one(
    gateway: Gateway, torchserve: TorchServe, client: httpx.Client
) -> None:
    body = b"raw bytes \x00\xff of any kind"
    octets = {"content-type": "application/octet-stream"}
    direct = client.post(
        f"{torchserve.inference_url}/predictions/echo", content=body, headers=octets
    )
    proxied = client.post(
        f"{gateway.url}/predictions/echo",
        content=body,
        headers={**INF, **octets, "x-request-id": "req-42"},
    )
    assert proxied.status_code == direct.status_code == 200
    assert proxied.content == direct.content == b'{"echo_bytes": 24}'
    assert proxied.headers.get("content-type") == direct.headers.get("content-type")
    assert proxied.headers["x-request-id"] == "req-42"
    versioned = client.post(
        f"{gateway.url}/predictions/echo/1.0", content=body, headers={**INF, **octets}
    )
    assert versioned.content == direct.content


def test_two_versions_and_set_default(gateway: Gateway, client: httpx.Client) -> None:
    for archive in ("adder_v1.mar", "adder_v2.mar"):
        params = {"url": archive, "initial_workers": 1, "synchronous": "true"}
        registered = client.post(f"{gateway.url}/models", params=params, headers=MGMT)
        assert registered.status_code == 200, registered.text
    try:

        def version_of(path: str) -> str:
            answer = client.post(f"{gateway.url}/predictions/{path}", content=b"x", headers=INF)
            assert answer.status_code == 200, answer.text
            return str(answer.json()["version"])

        assert version_of("adder/1.0") == "1.0"
        assert version_of("adder/2.0") == "2.0"
        assert version_of("adder") == "1.0"  # the first registered is the default
        switched = client.put(f"{gateway.url}/models/adder/2.0/set-default", headers=MGMT)
        assert switched.status_code == 200, switched.text
        assert version_of("adder") == "2.0"
        assert_error(
            client.post(f"{gateway.url}/predictions/adder/9.9", content=b"x", headers=INF),
            404,
            "ModelNotFound",
        )
    finally:
        client.put(f"{gateway.url}/models/adder/1.0/set-default", headers=MGMT)
        for version in ("2.0", "1.0"):
            client.delete(f"{gateway.url}/models/adder/{version}", headers=MGMT)


def test_management_round_trip(gateway: Gateway, client: httpx.Client) -> None:
    url = gateway.url
    registered = client.post(
        f"{url}/models", params={"url": "spare.mar", "synchronous": "true"}, headers=MGMT
    )
    assert registered.status_code == 200, registered.text
    scaled = client.put(
        f"{url}/models/spare", params={"min_worker": 1, "synchronous": "true"}, headers=MGMT
    )
    assert scaled.status_code == 200, scaled.text
    (described,) = client.get(f"{url}/models/spare", headers=MGMT).json()
    assert described["minWorkers"] == 1
    assert [w["status"] for w in described["workers"]] == ["READY"]
    listed = client.get(f"{url}/models", headers=MGMT).json()
    assert "spare" in {m["modelName"] for m in listed["models"]}
    unregistered = client.delete(f"{url}/models/spare/1.0", headers=MGMT)
    assert unregistered.status_code == 200, unregistered.text
    assert_error(client.get(f"{url}/models/spare", headers=MGMT), 404, "ModelNotFound")


def test_registration_takes_batch_size_and_delay_from_the_archive(
    gateway: Gateway, client: httpx.Client
) -> None:
    # TorchServe alone reads the archive's `maxBatchDelay: 0` as 100 ms; the gateway passes
    # the archive's values explicitly unless the client gives its own.
    described = []
    for extra in ({}, {"batch_size": 4, "max_batch_delay": 3}):
        params = {"url": "greedy.mar", "synchronous": "true", **extra}
        registered = client.post(f"{gateway.url}/models", params=params, headers=MGMT)
        assert registered.status_code == 200, registered.text
        (model,) = client.get(f"{gateway.url}/models/greedy", headers=MGMT).json()
        described.append((model["batchSize"], model["maxBatchDelay"]))
        removed = client.delete(f"{gateway.url}/models/greedy/1.0", headers=MGMT)
        assert removed.status_code == 200, removed.text
    assert described == [(2, 0), (4, 3)]


def test_readyz_before_and_after_a_model_loads(
    gateway: Gateway, torchserve: TorchServe, client: httpx.Client
) -> None:
    assert client.get(f"{gateway.url}/readyz").status_code == 200
    # Registered on TorchServe directly: the gateway's own POST /models answers an
    # asynchronous registration only once its workers are READY (GATEWAY_LOAD_GRACE_S).
    started = client.post(
        f"{torchserve.management_url}/models",
        params={"url": "slow_load.mar", "initial_workers": 1, "synchronous": "false"},
    )
    assert started.status_code == 202, started.text
    try:
        loading = client.get(f"{gateway.url}/readyz")
        assert loading.status_code == 503
        detail = loading.json()["models"]["slow_load"]
        assert detail["ready"] is False and detail["versions"]["1.0"]["minWorkers"] == 1
        poll(lambda: client.get(f"{gateway.url}/readyz").status_code == 200, what="/readyz 200")
        ready = client.get(f"{gateway.url}/readyz").json()
        assert ready["models"]["slow_load"]["versions"]["1.0"]["readyWorkers"] == 1
    finally:
        client.delete(f"{gateway.url}/models/slow_load/1.0", headers=MGMT)


def test_key_rules(gateway: Gateway, torchserve: TorchServe, client: httpx.Client) -> None:
    url = f"{gateway.url}/predictions/echo"
    missing = client.post(url, content=b"x")
    assert_error(missing, 401, "Unauthorized")
    assert missing.headers["www-authenticate"] == "Bearer"
    assert_error(
        client.post(url, content=b"x", headers={"authorization": "Bearer nope"}),
        401,
        "Unauthorized",
    )
    assert client.post(url, content=b"x", headers=INF).status_code == 200
    assert_error(client.get(f"{gateway.url}/models", headers=INF), 403, "Forbidden")
    assert_error(client.get(f"{gateway.url}/models"), 401, "Unauthorized")
    for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"):
        assert client.get(gateway.url + path).status_code == 200, path


def test_management_is_off_without_management_keys(
    torchserve: TorchServe, client: httpx.Client
) -> None:
    with running_gateway(torchserve, env={"GATEWAY_INFERENCE_KEYS": INF_KEY}) as gw:
        answer = client.get(f"{gw.url}/models", headers=MGMT)
        assert_error(answer, 403, "ManagementDisabled")
        assert "GATEWAY_MANAGEMENT_KEYS" in answer.json()["message"]


def registered_models(torchserve: TorchServe, client: httpx.Client) -> set[str]:
    return {
        m["modelName"] for m in client.get(f"{torchserve.management_url}/models").json()["models"]
    }


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/x.mar",
        "https://example.com/echo.mar",
        "file:///etc/passwd",
        "/etc/passwd",
        "../echo.mar",
        "%2e%2e%2fecho.mar",
        "..%5Cecho.mar",
        "echo.mar%00.txt",
        "%EF%BD%85cho.mar",
        "not-there.mar",
    ],
)
def test_ssrf_and_traversal_get_400_and_torchserve_is_not_asked(
    gateway: Gateway, torchserve: TorchServe, client: httpx.Client, url: str
) -> None:
    before = registered_models(torchserve, client)
    answer = client.post(f"{gateway.url}/models?url={url}&synchronous=true", headers=MGMT)
    assert_error(answer, 400, "InvalidRequest")
    assert registered_models(torchserve, client) == before


def test_one_byte_over_the_limit_is_413(gateway: Gateway, client: httpx.Client) -> None:
    url = f"{gateway.url}/predictions/echo"
    assert client.post(url, content=b"x" * BODY_LIMIT, headers=INF).status_code == 200
    assert_error(
        client.post(url, content=b"x" * (BODY_LIMIT + 1), headers=INF), 413, "PayloadTooLarge"
    )

    def chunked(total: int) -> Iterator[bytes]:
        sent = 0
        while sent < total:
            piece = min(64 * 1024, total - sent)
            sent += piece
            yield b"x" * piece

    assert client.post(url, content=chunked(BODY_LIMIT), headers=INF).status_code == 200
    assert_error(
        client.post(url, content=chunked(BODY_LIMIT + 1), headers=INF), 413, "PayloadTooLarge"
    )


def peak_rss_bytes(pid: int) -> int:
    """The process's peak RSS (VmHWM) since it started or since `reset_peak_rss`."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def reset_peak_rss(pid: int) -> None:
    """Set VmHWM back to the current RSS (Linux: `5` to /proc/<pid>/clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError as exc:
        pytest.fail(f"cannot reset the gateway's peak RSS (needs /proc/<pid>/clear_refs): {exc}")


def upload(port: int, head: bytes, pieces: Iterator[bytes]) -> bytes:
    """Send `head` then every piece over one connection while reading the answer; returns
    everything the server sent. Sending stops when the server stops reading (it closes the
    connection after answering): what it answered is what the test checks."""
    received = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:

        def read() -> None:
            with contextlib.suppress(OSError):
                while chunk := sock.recv(65536):
                    received.extend(chunk)

        reader = threading.Thread(target=read)
        reader.start()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head)
            for piece in pieces:
                sock.sendall(piece)
        reader.join(60)
    return bytes(received)


def test_the_gateway_memory_does_not_grow_with_the_size_sent(
    gateway: Gateway, client: httpx.Client
) -> None:
    assert gateway.pid is not None
    port = gateway.settings.gateway_port
    total = 200 * 1024 * 1024  # 200 MiB, far over the 1 MiB limit
    chunk = b"x" * (1024 * 1024)
    start = f"POST /predictions/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n{INF_HEADER}\r\n"

    def declared() -> Iterator[bytes]:
        for _ in range(total // len(chunk)):
            yield chunk

    def chunked() -> Iterator[bytes]:
        for _ in range(total // len(chunk)):
            yield b"%x\r\n" % len(chunk) + chunk + b"\r\n"
        yield b"0\r\n\r\n"

    uploads = [
        (f"Content-Length: {total}\r\n\r\n", declared),
        ("Transfer-Encoding: chunked\r\n\r\n", chunked),
    ]
    for headers, body in uploads:
        before = psutil.Process(gateway.pid).memory_info().rss
        reset_peak_rss(gateway.pid)
        answer = upload(port, (start + headers).encode(), body())
        grown = peak_rss_bytes(gateway.pid) - before
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 413"), answer[:300]
        assert b'"type":"PayloadTooLarge"' in rest.replace(b" ", b""), answer[:300]
        # The peak while 200 MiB arrived, not what was left after: buffering the body
        # whole and freeing it would show here.
        assert grown < 20 * 1024 * 1024, f"{headers.split(':')[0]}: peak RSS grew {grown} bytes"
    assert (
        client.post(f"{gateway.url}/predictions/echo", content=b"x", headers=INF).status_code == 200
    )


def test_a_handler_failure_is_a_clean_500(gateway: Gateway, client: httpx.Client) -> None:
    crashed = client.post(f"{gateway.url}/predictions/raising", content=b"anything", headers=INF)
    assert_error(crashed, 500, "ModelError")
    refused = client.post(f"{gateway.url}/predictions/raising", content=b"bad", headers=INF)
    assert_error(refused, 400, "InvalidModelInput")
    assert refused.json()["message"] == "input must be a JSON list of numbers"
    for leak in ("java", "org.pytorch", "Traceback", "/srv", "Exception"):
        assert leak not in crashed.text and leak not in refused.text


def test_a_model_that_fails_to_load_is_reported_and_others_keep_serving(
    gateway: Gateway, client: httpx.Client
) -> None:
    answer = client.post(
        f"{gateway.url}/models",
        params={"url": "broken.mar", "initial_workers": 1, "synchronous": "true"},
        headers=MGMT,
        timeout=120,
    )
    try:
        assert_error(answer, 500, "ModelLoadFailed")
        assert "/srv" not in answer.json()["message"]
        served = client.post(f"{gateway.url}/predictions/echo", content=b"abc", headers=INF)
        assert served.status_code == 200
    finally:
        client.delete(f"{gateway.url}/models/broken/1.0", headers=MGMT)


def test_registering_a_registered_version_is_409_conflict(
    gateway: Gateway, client: httpx.Client
) -> None:
    answer = client.post(
        f"{gateway.url}/models", params={"url": "echo.mar", "synchronous": "true"}, headers=MGMT
    )
    assert_error(answer, 409, "Conflict")
    assert "already registered" in answer.json()["message"]


def test_a_model_with_no_worker_is_503_model_busy(gateway: Gateway, client: httpx.Client) -> None:
    params = {"url": "idle.mar", "initial_workers": 0, "synchronous": "true"}
    registered = client.post(f"{gateway.url}/models", params=params, headers=MGMT)
    assert registered.status_code == 200, registered.text
    try:
        answer = client.post(f"{gateway.url}/predictions/idle", content=b"x", headers=INF)
        assert_error(answer, 503, "ModelBusy")
        assert answer.headers["retry-after"] == "1"
    finally:
        client.delete(f"{gateway.url}/models/idle/1.0", headers=MGMT)


def test_metrics_label_known_models_by_route_template(
    gateway: Gateway, client: httpx.Client
) -> None:
    client.post(f"{gateway.url}/predictions/echo", content=b"x", headers=INF)
    client.post(f"{gateway.url}/predictions/no-such-model-123", content=b"x", headers=INF)
    text = client.get(f"{gateway.url}/metrics").text
    assert 'model="echo",route="/predictions/{model}",status="200"' in text
    assert "no-such-model-123" not in text
    assert "gateway_request_duration_seconds_bucket" in text


def test_archives_exist(model_store: Path) -> None:
    assert {p.name for p in model_store.glob("*.mar")} >= {"echo.mar", "adder_v1.mar", "broken.mar"}
