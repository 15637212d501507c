"""The load generators' parsing and the asyncio fallback against a real local HTTP server."""

import http.server
import threading
from collections.abc import Iterator

import pytest

from bench.loadgen import Target, parse_wrk_output, percentile, run_asyncio

WRK_LINE = (
    'BENCH_JSON {"requests": 1200, "duration_us": 4000000, "bytes": 1, "connect_errors": 1, '
    '"read_errors": 2, "write_errors": 0, "status_errors": 3, "timeouts": 4, '
    '"p50_us": 1500, "p99_us": 9000, "mean_us": 2000.0}'
)


def test_wrk_result_line_is_parsed() -> None:
    result = parse_wrk_output("Running 4s test\n" + WRK_LINE + "\n", "", 0, 0.5)
    assert (result.requests, result.errors, result.duration_s) == (1200, 10, 4.0)
    assert (result.p50_ms, result.p99_ms, result.per_second) == (1.5, 9.0, 300.0)


def test_wrk_without_a_result_line_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no result"):
        parse_wrk_output("", "unable to connect", 1, 0.0)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile([], 50)) == (50, 99, 0)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        status = 200 if self.path == "/ok" else 503
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_asyncio_generator_counts_answers_and_failures(server: str) -> None:
    ok = run_asyncio(Target(f"{server}/ok", b"[1]", "application/json"), 2, 5.0, 20)
    assert 20 <= ok.requests <= 22 and ok.errors == 0  # each connection stops at the cap
    failing = run_asyncio(Target(f"{server}/no", b"[1]", "application/json"), 1, 5.0, 5)
    assert failing.requests == 5 and failing.errors == 5


def test_median_over_rounds_groups_in_order_takes_medians_and_sums_errors() -> None:
    from dataclasses import dataclass

    from bench.loadgen import median_over_rounds

    @dataclass(frozen=True)
    class Row:
        name: str
        round_index: int
        rate: float
        errors: int

    rows = [Row("b", 0, 3.0, 1), Row("a", 0, 10.0, 0), Row("b", 1, 1.0, 2), Row("b", 2, 2.0, 0)]
    assert median_over_rounds(rows, lambda r: r.name, ("rate",), round_index=-1) == [
        Row("b", -1, 2.0, 3),
        Row("a", -1, 10.0, 0),
    ]
