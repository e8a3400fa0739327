"""The progress protocol: a training process reports (elapsed, step, train loss, tokens).

`start()` starts the training clock and writes a `start` record; `Run.report` appends a
`step` record, with `tokens` (the input tokens `env.loader` has served in this process)
once the loader has served any; `Run.over_budget()` tells the training loop when to stop.
Records are JSON lines in `progress.jsonl` of the run's work directory, which the sandbox
tails to stream a learning curve. The file is written by untrusted code: `read` tolerates garbage, and
nothing here decides a reward (the budget is enforced by killing from outside).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from env import loader, runtime

MAX_RECORDS = 100_000  # the reader ignores anything beyond this many lines


class Run:
    def __init__(self, path: Path, budget_s: float):
        self.budget_s = budget_s
        self._t0 = time.monotonic()
        self._f = open(path, "a", buffering=1)
        self._write({"event": "start", "time": time.time(), "budget_s": budget_s})

    def _write(self, record: dict) -> None:
        self._f.write(json.dumps(record) + "\n")

    def elapsed(self) -> float:
        return time.monotonic() - self._t0

    def over_budget(self) -> bool:
        return self.elapsed() >= self.budget_s

    def report(self, step: int, train_loss: float) -> None:
        loss = float(train_loss)
        record = {"event": "step", "elapsed": round(self.elapsed(), 4), "step": int(step),
                  "train_loss": loss if math.isfinite(loss) else str(loss)}
        tokens = loader.tokens_served()
        if tokens:
            record["tokens"] = tokens
        self._write(record)

    def finish(self, **info) -> None:
        """Mark the end of training (before saving the model)."""
        self._write({"event": "end", "time": time.time(), "elapsed": round(self.elapsed(), 4), **info})


def start() -> Run:
    """Start the training clock. Call it after imports and setup, right before the loop."""
    return Run(runtime.progress_path(), runtime.budget_s())


@dataclass(frozen=True)
class Point:
    elapsed: float
    step: int
    train_loss: float  # may be nan/inf: that is the point of recording it
    tokens: int | None = None  # input tokens served by env.loader so far; None when not reported


def _tokens(value) -> int | None:
    """A record's `tokens`: an integer in [0, 2**63), else None (the point is kept either way)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return value
    return None


@dataclass(frozen=True)
class Progress:
    launch_time: float | None  # wall clock of the `launch` record (interpreter up)
    start_time: float | None  # wall clock of the `start` record (training clock starts)
    end_time: float | None  # wall clock of the `end` record
    curve: list[Point]

    @property
    def non_finite(self) -> bool:
        return any(not math.isfinite(p.train_loss) for p in self.curve)

    @property
    def tokens(self) -> int | None:
        """The last point's `tokens` (None when there is no point or it reported none)."""
        return self.curve[-1].tokens if self.curve else None


def read(path: Path, max_bytes: int = 16 << 20) -> Progress:
    """Parse a progress file, skipping lines that are not well-formed records."""
    launch = start = end = None
    curve: list[Point] = []
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes)
    except OSError:
        return Progress(None, None, None, [])
    for line in raw.splitlines()[:MAX_RECORDS]:
        try:
            rec = json.loads(line)
            event = rec["event"]
            if event == "launch" and launch is None:
                launch = float(rec["time"])
            elif event == "start" and start is None:
                start = float(rec["time"])
            elif event == "end" and end is None:
                end = float(rec["time"])
            elif event == "step":
                curve.append(Point(float(rec["elapsed"]), int(rec["step"]), float(rec["train_loss"]),
                                   _tokens(rec.get("tokens"))))
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError):
            continue
    return Progress(launch, start, end, curve)
