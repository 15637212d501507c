"""The peer phase of `python -m bench`: start the peers, check, measure, stop.

After the main rounds (like the two-backend row), so the peers' processes are not running
while the other rows are measured; within this phase every round goes through the project,
every peer and the reference row back to back at each concurrency (`rows.peer_round`).
Which servers are peers: `servers`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from bench.loadgen import Generator
from bench.peers import rows as peer_rows
from bench.peers.model import load_mnist, predict_rows
from bench.peers.rows import PeerRow, check_answers, peer_round, project_server, warm_up
from bench.peers.servers import running_peers
from bench.stack import GATEWAY, BenchModel, Stack

logger = logging.getLogger(__name__)

# Where `bench.stack.write_bench_spec` saves the CNN's weights in the bench's work dir.
WEIGHTS_FILE = "mnist_cnn.pt"


def expected_answer(model: BenchModel, weights: Path, threads: int) -> list[float]:
    """The model's own output for `model`'s body, computed in this process."""
    instance = torch.tensor(json.loads(model.body), dtype=torch.float32)
    return predict_rows(load_mnist(weights, threads), instance.unsqueeze(0))[0]


def measure(
    stack: Stack,
    model: BenchModel,
    weights: Path,
    threads: int,
    log_dir: Path,
    generator: Generator,
    *,
    rounds: int,
    duration_s: float,
    warmup_s: float,
    max_requests: int,
) -> list[PeerRow]:
    """The peers and the project on `model` (the bench's mnist28), every round's rows.

    `weights` is the state dict the archive was built from; `threads` the torch threads the
    project's worker runs on, given to every peer too. Raises RuntimeError when a peer
    does not start or answers other numbers than the model in-process; every peer started
    is stopped either way.
    """
    project = project_server(
        stack.target(model, GATEWAY),
        [pid for pid in (stack.gateway.pid, stack.torchserve.pid) if pid]
        + stack.worker_pids(model.name),
    )
    rows: list[PeerRow] = []
    with running_peers(stack, model, weights, threads, log_dir) as peers:
        servers = [project, *peers]
        check_answers(servers, expected_answer(model, weights, threads))
        if warmup_s > 0:
            warm_up(servers, generator, warmup_s)
        for round_index in range(rounds):
            logger.info("peers: round %d of %d", round_index + 1, rounds)
            rows += peer_round(servers, round_index, generator, duration_s, max_requests)
    return rows


def markdown(rows: Sequence[PeerRow]) -> str:
    """The peer table (medians over rounds) and the ratios, for bench.md."""
    return peer_rows.markdown(peer_rows.combine(rows), peer_rows.ratios(rows))


def as_json(rows: Sequence[PeerRow]) -> dict[str, object]:
    """The same for bench.json: `rows` (medians, each with its `role`: "project", "peer" or
    "reference") and `ratios` per concurrency (over the peers only)."""
    return {
        "rows": [
            {**asdict(row), "role": peer_rows.role(row.server)} for row in peer_rows.combine(rows)
        ],
        "ratios": [asdict(ratio) for ratio in peer_rows.ratios(rows)],
    }
