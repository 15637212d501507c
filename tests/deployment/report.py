"""Timed steps and a pass/fail count, printed as they happen."""

from __future__ import annotations

import contextlib
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field


class CheckFailed(Exception):
    """A check did not hold; the message says what was seen."""


@dataclass
class Outcome:
    name: str
    passed: bool
    seconds: float
    detail: str = ""


@dataclass
class Report:
    """Every step and check of a run, in order, with its time since the run began."""

    started: float = field(default_factory=time.monotonic)
    outcomes: list[Outcome] = field(default_factory=list)

    def _elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, message: str) -> None:
        print(f"[{self._elapsed():7.1f}s] {message}", flush=True)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time `name`; an exception inside records a failure and propagates."""
        self.say(f"{name} ...")
        began = time.monotonic()
        try:
            yield
        except BaseException as error:
            seconds = time.monotonic() - began
            detail = _describe(error)
            self.outcomes.append(Outcome(name, False, seconds, detail))
            self.say(f"FAIL {name} ({seconds:.1f} s): {detail}")
            raise
        seconds = time.monotonic() - began
        self.outcomes.append(Outcome(name, True, seconds))
        self.say(f"ok   {name} ({seconds:.1f} s)")

    def check(self, name: str, body: Callable[[], object]) -> bool:
        """Run `body()` as a step that never propagates its failure; True when it passed."""
        try:
            with self.step(name):
                body()
        except Exception:
            return False
        return True

    def fail(self, name: str, error: BaseException) -> None:
        """Record a failure that happened outside any step."""
        self.outcomes.append(Outcome(name, False, 0.0, _describe(error)))
        self.say(f"FAIL {name}: {_describe(error)}")

    def note(self, message: str) -> None:
        """A measured figure worth keeping (sizes, times), printed with the steps."""
        self.say(f"     {message}")

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.passed]

    def summary(self) -> str:
        passed = len(self.outcomes) - len(self.failed)
        lines = [f"{passed} passed, {len(self.failed)} failed in {self._elapsed():.0f} s"]
        lines += [f"  FAILED {o.name}: {o.detail}" for o in self.failed]
        return "\n".join(lines)


def _describe(error: BaseException) -> str:
    if isinstance(error, CheckFailed):
        return str(error)
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    # Anything else is a harness or environment error: keep where it came from.
    frames = traceback.extract_tb(error.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return f"{type(error).__name__}: {error}{where}"


def expect(condition: bool, message: str) -> None:
    """Raise CheckFailed(message) unless `condition` holds."""
    if not condition:
        raise CheckFailed(message)
