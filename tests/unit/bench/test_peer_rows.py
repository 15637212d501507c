"""`bench.peers.rows`: the reference row is shown but never competes as a peer."""

import pytest

from bench.peers.compare import as_json
from bench.peers.rows import PROJECT, PeerRow, combine, markdown, ratios, role
from bench.peers.servers import FASTAPI, LITSERVE, PEERS, PROJECT_ARCHIVE_B8, STOCK_TORCHSERVE


def rows(per_round: list[dict[str, float]], concurrency: int = 16) -> list[PeerRow]:
    return [
        PeerRow(server, concurrency, round_index, rps, 1.0, 2.0, 0.5, 0)
        for round_index, servers in enumerate(per_round)
        for server, rps in servers.items()
    ]


def test_the_reference_row_is_never_the_best_peer() -> None:
    # The reference is fastest in every round; the stock TorchServe is the best peer.
    measured = rows(
        [
            {
                PROJECT: 1000,
                FASTAPI: 500,
                LITSERVE: 600,
                STOCK_TORCHSERVE: 800,
                PROJECT_ARCHIVE_B8: 2000,
            },
            {
                PROJECT: 900,
                FASTAPI: 450,
                LITSERVE: 500,
                STOCK_TORCHSERVE: 600,
                PROJECT_ARCHIVE_B8: 1800,
            },
            {
                PROJECT: 1200,
                FASTAPI: 400,
                LITSERVE: 700,
                STOCK_TORCHSERVE: 1000,
                PROJECT_ARCHIVE_B8: 2400,
            },
        ]
    )
    (found,) = ratios(measured)
    assert found.best_peer == STOCK_TORCHSERVE
    # Per round 1000/800, 900/600, 1200/1000 -> median 1.25; against FastAPI 2, 2, 3 -> 2.
    assert found.throughput_ratio == pytest.approx(1.25)
    assert found.vs_fastapi == pytest.approx(2.0)


def test_with_only_the_reference_beside_the_project_there_is_no_ratio() -> None:
    assert ratios(rows([{PROJECT: 1000, PROJECT_ARCHIVE_B8: 2000}])) == []


def test_roles() -> None:
    assert role(PROJECT) == "project"
    assert role(PROJECT_ARCHIVE_B8) == "reference"
    assert [role(peer) for peer in PEERS] == ["peer"] * 3
    assert PROJECT_ARCHIVE_B8 not in PEERS


def test_markdown_shows_the_reference_row_and_says_what_is_a_peer() -> None:
    measured = rows(
        [{PROJECT: 1000, FASTAPI: 500, STOCK_TORCHSERVE: 800, PROJECT_ARCHIVE_B8: 2000}]
    )
    text = markdown(combine(measured), ratios(measured))
    assert f"| {PROJECT_ARCHIVE_B8} | c16 | 2,000 |" in text
    assert f"- Peers: {FASTAPI}; {STOCK_TORCHSERVE}. Only they count in the ratios." in text
    assert (
        f"- Reference, not a peer: {PROJECT_ARCHIVE_B8}. It runs this project's own handler" in text
    )
    assert f"| c16 | {STOCK_TORCHSERVE} | 1.25 | 2.00 |" in text


def test_json_rows_carry_their_role_and_ratios_only_peers() -> None:
    measured = rows([{PROJECT: 1000, FASTAPI: 500, PROJECT_ARCHIVE_B8: 2000}])
    report = as_json(measured)
    assert {(row["server"], row["role"]) for row in report["rows"]} == {  # type: ignore[attr-defined]
        (PROJECT, "project"),
        (FASTAPI, "peer"),
        (PROJECT_ARCHIVE_B8, "reference"),
    }
    (ratio,) = report["ratios"]  # type: ignore[misc]
    assert ratio["best_peer"] == FASTAPI and ratio["throughput_ratio"] == pytest.approx(2.0)
