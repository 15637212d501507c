"""The soak's figures: per interval answers by status, p50/p99, RSS and open file descriptors
per process, and their growth from the first interval to the last; markdown and a PNG."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1024 * 1024


@dataclass(frozen=True)
class Interval:
    """One interval of the run: requests sent in it, by status ("0": no answer), latency of
    the 200s, and each process's RSS (bytes) and open file descriptors at its end."""

    start_s: float
    requests: int
    statuses: dict[str, int]
    p50_ms: float
    p99_ms: float
    rss: dict[str, int] = field(default_factory=dict)
    fds: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SoakResult:
    model: str
    duration_s: float
    rate: float
    rate_source: str
    interval_s: float
    requests: int
    statuses: dict[str, int]
    intervals: list[Interval]

    @property
    def failed(self) -> int:
        """Requests not answered 200."""
        return sum(count for status, count in self.statuses.items() if status != "200")

    def growth(self, attribute: str) -> dict[str, tuple[int, int]]:
        """Per process, (first, last) of `rss` or `fds` over the intervals."""
        if not self.intervals:
            return {}
        first: dict[str, int] = getattr(self.intervals[0], attribute)
        last: dict[str, int] = getattr(self.intervals[-1], attribute)
        return {role: (first[role], last.get(role, 0)) for role in first}


def _percent(first: int, last: int) -> str:
    return f"{(last - first) / first * 100:+.1f}%" if first else "n/a"


def _label(interval_s: float, start_s: float) -> str:
    if interval_s >= 60:
        return f"min {int(start_s // 60) + 1}"
    return f"{start_s:.0f}-{start_s + interval_s:.0f} s"


def markdown(result: SoakResult) -> str:
    minutes = result.duration_s / 60
    achieved = result.requests / result.duration_s if result.duration_s else 0.0
    statuses = Counter(result.statuses)
    by_status = ", ".join(f"{status}: {count:,}" for status, count in sorted(statuses.items()))
    errors = {s: c for s, c in sorted(statuses.items()) if s != "200"}
    roles = list(result.intervals[0].rss) if result.intervals else []
    lines = [
        f"# Soak: {result.model} through the gateway, {minutes:.1f} min",
        "",
        f"- Rate: {result.rate:,.1f} requests/s ({result.rate_source}); sent "
        f"{result.requests:,} ({achieved:,.1f}/s)",
        f"- Answers by status: {by_status}",
        f"- Errors by status: {errors or 'none'}",
        "",
        "## Per interval",
        "",
        "| interval | requests | errors | p50 ms | p99 ms | "
        + " | ".join(f"{role} RSS MiB" for role in roles)
        + " | "
        + " | ".join(f"{role} fds" for role in roles)
        + " |",
        "|---" * (5 + 2 * len(roles)) + "|",
    ]
    for interval in result.intervals:
        failed = sum(c for s, c in interval.statuses.items() if s != "200")
        lines.append(
            f"| {_label(result.interval_s, interval.start_s)} | {interval.requests:,} | "
            f"{failed} | {interval.p50_ms:.2f} | {interval.p99_ms:.2f} | "
            + " | ".join(f"{interval.rss.get(r, 0) / MIB:.1f}" for r in roles)
            + " | "
            + " | ".join(str(interval.fds.get(r, 0)) for r in roles)
            + " |"
        )
    lines += [
        "",
        "## Growth, first interval to last",
        "",
        "| process | RSS MiB | RSS growth | fds | fds growth |",
        "|---|---|---|---|---|",
    ]
    fds = result.growth("fds")
    for role, (first, last) in result.growth("rss").items():
        fd_first, fd_last = fds.get(role, (0, 0))
        lines.append(
            f"| {role} | {first / MIB:.1f} -> {last / MIB:.1f} | {_percent(first, last)} | "
            f"{fd_first} -> {fd_last} | {fd_last - fd_first:+d} |"
        )
    return "\n".join(lines) + "\n"


def chart(result: SoakResult, path: Path) -> None:
    """A PNG: latency (p50, p99), RSS and open fds per process, per interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = 60.0 if result.interval_s >= 60 else 1.0
    unit = "min" if scale == 60 else "s"
    ends = [(i.start_s + result.interval_s) / scale for i in result.intervals]
    figure, (latency, memory, files) = plt.subplots(1, 3, figsize=(16, 4.5))
    latency.plot(ends, [i.p50_ms for i in result.intervals], marker="o", label="p50")
    latency.plot(ends, [i.p99_ms for i in result.intervals], marker="o", label="p99")
    latency.set_ylabel("ms")
    latency.set_title("latency of 200s")
    latency.legend()
    roles = list(result.intervals[0].rss) if result.intervals else []
    for role in roles:
        memory.plot(
            ends, [i.rss.get(role, 0) / MIB for i in result.intervals], marker="o", label=role
        )
        files.plot(ends, [i.fds.get(role, 0) for i in result.intervals], marker="o", label=role)
    memory.set_ylabel("RSS MiB")
    memory.set_title("RSS per process")
    memory.legend()
    files.set_ylabel("open file descriptors")
    files.set_title("fds per process")
    files.legend()
    for axes in (latency, memory, files):
        axes.set_xlabel(f"time ({unit})")
        axes.set_ylim(bottom=0)
    figure.suptitle(
        f"soak: {result.model} via the gateway at {result.rate:,.0f}/s for "
        f"{result.duration_s / 60:.1f} min; {result.requests:,} requests, "
        f"{result.failed} failed"
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
