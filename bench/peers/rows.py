"""The peer rows: the project's path and each peer at c1, c16 and c64, interleaved by round.

Every round measures, at each concurrency, the project (gateway -> TorchServe -> handler),
every peer and the reference row back to back, with the same body and load generator. Per
configuration: requests/s, p50, p99, errors, and the server CPU per request (psutil CPU-time
deltas over every process of that server: gateway, JVM and worker for the project; the
uvicorn process and LitServe's forked processes for the Python peers; the `torchserve`
command, JVM and worker for stock TorchServe; the bench's JVM and the worker of the
reference row). Ratios "project / best peer" and "project / FastAPI" are taken within each
round (req/s), then the median, over the peers only: the reference row
(`servers.REFERENCES`, the project's own archive without the gateway) is never a peer.
Before measuring, every server must answer the body with the model's own numbers (within
1e-5), or the run stops.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import numpy as np

from bench.loadgen import Generator, Target, median, median_over_rounds
from bench.peers.running import PeerServer
from bench.peers.servers import FASTAPI, REFERENCES
from bench.processes import CpuWindow

PROJECT = "this project (gateway + TorchServe)"
# What each server of the table is, in bench.json.
ROLE_PROJECT, ROLE_PEER, ROLE_REFERENCE = "project", "peer", "reference"
CONCURRENCIES = (1, 16, 64)
TOLERANCE = 1e-5


@dataclass(frozen=True)
class PeerRow:
    """One server at one concurrency in one round (or the median over rounds)."""

    server: str
    concurrency: int
    round_index: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms: float
    errors: int


@dataclass(frozen=True)
class PeerRatio:
    """The project against the best peer at one concurrency: medians of per-round ratios."""

    concurrency: int
    best_peer: str  # the peer fastest most often over the rounds
    throughput_ratio: float  # project req/s / best peer req/s
    vs_fastapi: float  # project req/s / the FastAPI endpoint's req/s


def check_answers(servers: Sequence[PeerServer], expected: Sequence[float]) -> None:
    """POST each server's body once; RuntimeError unless it answers `expected` within 1e-5."""
    with httpx.Client(trust_env=False, timeout=60.0) as client:
        for server in servers:
            answer = client.post(
                server.target.url,
                content=server.target.body,
                headers={"content-type": server.target.content_type},
            )
            if answer.status_code != 200:
                raise RuntimeError(f"{server.name}: {answer.status_code} {answer.text[:300]}")
            got = np.asarray(json.loads(answer.content), dtype=np.float64).reshape(-1)
            if got.shape != (len(expected),) or not np.allclose(
                got, expected, rtol=0.0, atol=TOLERANCE
            ):
                raise RuntimeError(f"{server.name} answered {got.tolist()}, not {expected}")


def measure_once(
    server: PeerServer,
    concurrency: int,
    round_index: int,
    generator: Generator,
    duration_s: float,
    max_requests: int,
) -> PeerRow:
    """One window of load on one server, with its processes' CPU per request."""
    window = CpuWindow(functools.partial(dict, server=server.pids))
    window.start()
    result = generator(server.target, concurrency, duration_s, max_requests)
    spent = window.stop()
    return PeerRow(
        server.name,
        concurrency,
        round_index,
        result.per_second,
        result.p50_ms,
        result.p99_ms,
        spent["server"] * 1e3 / max(1, result.requests),
        result.errors,
    )


def peer_round(
    servers: Sequence[PeerServer],
    round_index: int,
    generator: Generator,
    duration_s: float,
    max_requests: int,
) -> list[PeerRow]:
    """One round: at each concurrency, every server (the project first) back to back."""
    return [
        measure_once(server, concurrency, round_index, generator, duration_s, max_requests)
        for concurrency in CONCURRENCIES
        for server in servers
    ]


def warm_up(servers: Sequence[PeerServer], generator: Generator, seconds: float) -> None:
    """A short load on each server at the highest concurrency (JIT, caches, pools)."""
    for server in servers:
        generator(server.target, CONCURRENCIES[-1], seconds, 50_000)


def combine(rows: Sequence[PeerRow]) -> list[PeerRow]:
    """One row per (server, concurrency): medians over rounds, errors summed."""
    return median_over_rounds(
        rows,
        lambda row: (row.concurrency, row.server),
        ("requests_per_s", "p50_ms", "p99_ms", "server_cpu_ms"),
        round_index=-1,
    )


def role(server: str) -> str:
    """The role of `server` in the table: "project", "reference" (`servers.REFERENCES`) or
    "peer"."""
    if server == PROJECT:
        return ROLE_PROJECT
    return ROLE_REFERENCE if server in REFERENCES else ROLE_PEER


def ratios(rows: Sequence[PeerRow]) -> list[PeerRatio]:
    """Per concurrency, the project's req/s over the best peer's, taken within each round.

    Only peers compete: the reference rows are left out of "best peer" and of the ratios.
    """
    found = []
    for concurrency in dict.fromkeys(row.concurrency for row in rows):
        per_round: list[float] = []
        against_fastapi: list[float] = []
        winners: list[str] = []
        for round_index in dict.fromkeys(row.round_index for row in rows):
            same = [r for r in rows if (r.concurrency, r.round_index) == (concurrency, round_index)]
            project = [r for r in same if r.server == PROJECT]
            peers = [r for r in same if role(r.server) == ROLE_PEER]
            if not project or not peers:
                continue
            best = max(peers, key=lambda r: r.requests_per_s)
            winners.append(best.server)
            per_round.append(project[0].requests_per_s / max(best.requests_per_s, 1e-9))
            fastapi = [r for r in peers if r.server == FASTAPI]
            if fastapi:
                against_fastapi.append(
                    project[0].requests_per_s / max(fastapi[0].requests_per_s, 1e-9)
                )
        if per_round:
            best_peer = max(dict.fromkeys(winners), key=winners.count)
            found.append(
                PeerRatio(concurrency, best_peer, median(per_round), median(against_fastapi))
            )
    return found


def markdown(rows: Sequence[PeerRow], found: Sequence[PeerRatio]) -> str:
    """The peer table and the ratio table, as markdown, with which rows are peers."""
    servers = list(dict.fromkeys(row.server for row in rows))
    peers = [server for server in servers if role(server) == ROLE_PEER]
    references = [server for server in servers if role(server) == ROLE_REFERENCE]
    lines = [
        "### Peers: the same model and body served by other stacks (mnist28, 6 KB JSON)",
        "",
        "Every server answered the body with the model's own numbers (within 1e-5) before "
        "being measured. Server CPU: every process of that server, per request (it survives "
        "a busy machine better than req/s).",
        "",
        "- Peers: " + ("; ".join(peers) or "none") + ". Only they count in the ratios.",
    ]
    if references:
        lines.append(
            "- Reference, not a peer: "
            + "; ".join(references)
            + ". It runs this project's own handler on this project's TorchServe settings "
            "(JVM flags, log4j2.xml, config.properties), called without the gateway."
        )
    lines += [
        "",
        "| server | concurrency | req/s | p50 | p99 | server CPU/request | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {row.server} | c{row.concurrency} | {row.requests_per_s:,.0f} | {row.p50_ms:.2f} ms "
        f"| {row.p99_ms:.2f} ms | {row.server_cpu_ms:.2f} ms | {row.errors} |"
        for row in rows
    ]
    lines += [
        "",
        "| concurrency | best peer | project / best peer (req/s) | project / FastAPI (req/s) |",
        "|---:|---|---:|---:|",
    ]
    lines += [
        f"| c{r.concurrency} | {r.best_peer} | {r.throughput_ratio:.2f} | {r.vs_fastapi:.2f} |"
        for r in found
    ]
    return "\n".join(lines) + "\n"


def project_server(target: Target, pids: list[int]) -> PeerServer:
    """The project's path as a row of the same table."""
    return PeerServer(PROJECT, target, pids)
