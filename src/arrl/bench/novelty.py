"""`arrl bench novelty RUN...`: what answering near-duplicates without training would have cost and saved.

For every candidate of a recorded run that trained a new program (exact repeats, re-runs and
confirmations are not candidates here: the ledger already answers or judges those), the replay
finds the nearest program that ran before it (arrl.driver.novelty: a catalog distance when both
are catalog settings of one script, else a source distance; `--distance source` takes the source
distance for every pair, as `[search] novelty_source` would on free-form edits) and, for each
threshold, counts the candidates at or below it:

- compute saved: their training seconds, over every run's training seconds;
- lost wins: those that were accepted (the loss that matters), and those whose val_bpb beat
  their incumbent's at all.

A threshold is worth turning on where it saves compute and loses no accepted candidate. Nothing
in the run directory is written.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from arrl import paths
from arrl import target as target_mod
from arrl.bench.replay import ReplayError, find_run
from arrl.driver.identity import normalize
from arrl.driver.novelty import Index
from arrl.ledger.queries import NOT_RUN
from arrl.ledger.reader import DatabaseError, open_read_only

THRESHOLDS = (0.0, 0.1, 0.17, 0.2, 0.25, 0.34, 0.5)


@dataclass
class Case:
    run: str
    exp_id: int
    distance: float
    kind: str  # "catalog" or "source"
    train_s: float
    accepted: bool
    improved: bool


@dataclass
class Recording:
    run: str
    cases: list[Case]
    total_train_s: float
    skipped: dict = field(default_factory=dict)


DISTANCES = ("auto", "source")


def load(run: str, runs: Path | None = None, distance: str = "auto") -> Recording:
    """Read a run's trained programs in id order and each new candidate's distance to those before it.

    distance "auto" measures as the driver does (the catalog distance between catalog settings of one
    script, else the source distance); "source" takes the source distance for every pair: what `[search]
    novelty_source` would do to edits like the recorded ones, had a free-form policy written them."""
    if distance not in DISTANCES:
        raise ReplayError(f"distance {distance!r}: expected one of {', '.join(DISTANCES)}")
    d = find_run(run, runs)
    try:
        cfg = json.loads((d / "config.json").read_text())
        tgt = target_mod.load(cfg.get("target", ""), paths.targets_dir())
    except (OSError, ValueError) as e:
        raise ReplayError(f"{d}: config.json is unreadable ({e})") from None
    except target_mod.TargetError as e:
        raise ReplayError(f"{d}: the run's target is gone ({e})") from None
    try:
        db = open_read_only(d)
        rows = [r for r in db.trained_runs() if r["status"] not in NOT_RUN]
        values = db.accepted_values()
    except DatabaseError as e:
        raise ReplayError(f"{d}: the ledger is unreadable ({e})") from None
    db.close()
    base = [r["val_bpb"] for r in rows if r["kind"] == "baseline" and r["status"] == "ok"]
    base_value = statistics.fmean(base) if base else None
    index, seen, cases, skipped = Index(tgt.catalog if distance == "auto" else ()), set(), [], {}
    for r in rows:
        path = d / "experiments" / f"{r['id']:06d}" / "train.py"
        try:
            source = path.read_text()
        except OSError:
            if r["kind"] != "baseline":
                skipped["no train.py"] = skipped.get("no train.py", 0) + 1
                continue
            source = tgt.source()  # a baseline runs the target as shipped
        norm = normalize(source)
        if r["kind"] == "candidate" and norm not in seen:
            near = index.nearest(source)
            if near is not None:
                inc_value = values.get(r["incumbent_id"], base_value)
                cases.append(Case(d.name, r["id"], near.distance, near.kind, float(r["train_s"] or 0.0),
                                  r["id"] in values, r["status"] == "ok" and inc_value is not None
                                  and r["val_bpb"] < inc_value))
        if norm not in seen:
            seen.add(norm)
            index.add(r["id"], source)
    return Recording(d.name, cases, sum(float(r["train_s"] or 0.0) for r in rows), skipped)


@dataclass
class Result:
    threshold: float
    candidates: int = 0
    skipped: int = 0
    saved_s: float = 0.0
    total_s: float = 0.0
    accepted: int = 0
    lost_accepted: int = 0
    improved: int = 0
    lost_improved: int = 0

    @property
    def saved_frac(self) -> float:
        return self.saved_s / self.total_s if self.total_s else 0.0

    def row(self) -> dict:
        return {"threshold": self.threshold, "candidates": self.candidates, "answered_without_training": self.skipped,
                "saved_frac": round(self.saved_frac, 4), "saved_s": round(self.saved_s, 1),
                "total_train_s": round(self.total_s, 1), "accepted": self.accepted,
                "lost_accepted": self.lost_accepted, "improved": self.improved, "lost_improved": self.lost_improved}


def replay(recordings: list[Recording], thresholds=THRESHOLDS) -> list[Result]:
    out = []
    for t in thresholds:
        res = Result(t)
        for rec in recordings:
            res.total_s += rec.total_train_s
            for c in rec.cases:
                res.candidates += 1
                res.accepted += c.accepted
                res.improved += c.improved
                if c.distance <= t:
                    res.skipped += 1
                    res.saved_s += c.train_s
                    res.lost_accepted += c.accepted
                    res.lost_improved += c.improved
        out.append(res)
    return out


def table(results: list[Result]) -> str:
    lines = ["| threshold | answered without training / new candidates | compute saved | accepted lost | "
             "improvements lost |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.threshold:g} | {r.skipped} / {r.candidates} | {100 * r.saved_frac:.1f}% "
                     f"({r.saved_s:.0f} of {r.total_s:.0f} s) | {r.lost_accepted} of {r.accepted} | "
                     f"{r.lost_improved} of {r.improved} |")
    return "\n".join(lines)


def distances(recordings: list[Recording]) -> str:
    """The distribution of nearest distances, per kind: where a threshold could sit."""
    parts = []
    for kind in ("catalog", "source"):
        ds = sorted(c.distance for rec in recordings for c in rec.cases if c.kind == kind)
        if ds:
            q = statistics.quantiles(ds, n=4) if len(ds) > 1 else [ds[0]] * 3
            parts.append(f"{kind}: {len(ds)} candidates, nearest distance min {ds[0]:.3f}, quartiles "
                         f"{q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f}, max {ds[-1]:.3f}")
    return "\n".join(parts)
