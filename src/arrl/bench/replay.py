"""`arrl bench abort RUN...`: replay recorded learning curves under an early-abort rule, offline.

Every finished candidate of a run has its whole learning curve on disk (`curve.json`). The
replay feeds each curve to `arrl.worker.abort.Checker` point by point, exactly as a worker
would have during the run, against the same reference the driver would have given it (the
learning curves of the candidate's incumbent, `arrl.worker.abort.reference_runs`), and reports:

- compute saved: the training seconds after each abort, over all the training seconds the
  runs spent (baselines and confirmations included: they are never aborted);
- false aborts: aborted candidates that were accepted (the loss that matters), and aborted
  candidates whose val_bpb beat their incumbent's at all (a looser count).

Only candidates that ran to the end are replayed: a run recorded with early abort on has
no curve past its abort, so its aborted candidates are counted apart and not judged.
Nothing in the run directory is written.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

from arrl import paths
from arrl.worker import abort as extrapolate
from arrl import target as target_mod
from arrl.ledger.queries import NOT_RUN
from arrl.ledger.reader import DatabaseError, open_read_only
from arrl.worker.abort import reference_runs


class ReplayError(Exception):
    """A run cannot be replayed; the message names the run and the reason."""


@dataclass
class Case:
    """One candidate that trained to the end: its curve and what it turned out to be."""
    run: str
    exp_id: int
    curve: list
    train_s: float
    reference: list  # the incumbent's runs' (elapsed, loss) curves
    accepted: bool
    improved: bool  # its val_bpb beat its incumbent's
    reward: float | None = None  # the reward it earned by running to the end


@dataclass
class Recording:
    run: str
    budget_s: float
    cases: list[Case]
    total_train_s: float  # every run's training seconds (the denominator of compute saved)
    skipped: dict = field(default_factory=dict)  # why candidates were not replayed -> count


@dataclass
class Result:
    z: float
    margin: float
    every: float
    min_frac: float
    candidates: int = 0
    aborted: int = 0
    saved_s: float = 0.0
    total_s: float = 0.0
    accepted: int = 0
    false_aborts: int = 0      # aborted but accepted
    improved: int = 0
    improved_aborted: int = 0  # aborted but its val_bpb beat the incumbent's
    aborted_rewards: list = field(default_factory=list)  # what the aborted ones earned by running to the end

    @property
    def aborted_reward(self) -> float | None:
        """Mean reward the aborted candidates earned in the recording: a guide for `[reward] aborted`."""
        r = [x for x in self.aborted_rewards if x is not None]
        return sum(r) / len(r) if r else None

    @property
    def saved_frac(self) -> float:
        return self.saved_s / self.total_s if self.total_s else 0.0

    @property
    def false_frac(self) -> float:
        """False aborts over the candidates that were accepted (the share of wins lost)."""
        return self.false_aborts / self.accepted if self.accepted else 0.0

    def row(self) -> dict:
        return {"z": self.z, "margin": self.margin, "every": self.every, "min_frac": self.min_frac,
                "candidates": self.candidates, "aborted": self.aborted, "saved_frac": round(self.saved_frac, 4),
                "saved_s": round(self.saved_s, 1), "total_train_s": round(self.total_s, 1),
                "accepted": self.accepted, "false_aborts": self.false_aborts,
                "false_abort_frac": round(self.false_frac, 4), "improved": self.improved,
                "improved_aborted": self.improved_aborted,
                "aborted_reward": None if self.aborted_reward is None else round(self.aborted_reward, 3)}


def find_run(run: str, runs: Path | None) -> Path:
    """A recorded run by its path, or by its name under `runs` (default: the runs folder)."""
    d = Path(run)
    base = runs or paths.runs_dir()
    if not (d / "ledger.sqlite").is_file():
        d = base / run
    if not (d / "ledger.sqlite").is_file():
        raise ReplayError(f"{run}: no run there (no ledger.sqlite as a path or under {base})")
    return d


def _budget(d: Path) -> float:
    try:
        cfg = json.loads((d / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ReplayError(f"{d}: config.json is unreadable ({e})") from None
    budget = float((cfg.get("workers") or {}).get("budget_s") or 0.0)
    if budget > 0:
        return budget
    try:
        return target_mod.load(cfg.get("target", ""), paths.targets_dir()).budget_s
    except target_mod.TargetError as e:
        raise ReplayError(f"{d}: the run's target is gone, pass --budget ({e})") from None


def load(run: str, runs: Path | None = None, budget_s: float | None = None) -> Recording:
    """Read a run's finished candidates, their curves, bars and fates (read-only)."""
    d = find_run(run, runs)
    budget = budget_s or _budget(d)
    try:
        db = open_read_only(d)
        rows = db.trained_runs()
        values = db.accepted_values()
        accepted = set(values)
    except DatabaseError as e:
        raise ReplayError(f"{d}: the ledger is unreadable ({e})") from None
    base = [r["val_bpb"] for r in rows if r["kind"] == "baseline" and r["status"] == "ok"]
    base_value = sum(base) / len(base) if base else None
    total = sum(float(r["train_s"] or 0.0) for r in rows)
    refs: dict = {}
    cases, skipped = [], {}

    def skip(why):
        skipped[why] = skipped.get(why, 0) + 1

    for r in rows:
        if r["kind"] != "candidate" or r["status"] in NOT_RUN:  # nothing trained
            continue
        if r["status"] == "aborted":
            skip("aborted while recorded (no curve past the abort)")
            continue
        if r["status"] != "ok":
            skip(f"status {r['status']}")
            continue
        inc = r["incumbent_id"]
        if inc not in refs:
            refs[inc] = reference_runs(d, db.incumbent_run_ids(inc))
        if not refs[inc]:
            skip("the incumbent has no curve")
            continue
        try:
            curve = json.loads((d / "experiments" / f"{r['id']:06d}" / "curve.json").read_text())
        except (OSError, ValueError):
            skip("no curve.json")
            continue
        pts = [(float(p[0]), int(p[1]), float(p[2])) for p in curve
               if isinstance(p, list) and len(p) == 3 and None not in p]
        inc_value = values.get(inc, base_value)
        cases.append(Case(run=d.name, exp_id=r["id"], curve=pts, train_s=float(r["train_s"] or 0.0),
                          reference=refs[inc], accepted=r["id"] in accepted,
                          improved=inc_value is not None and r["val_bpb"] < inc_value, reward=r["reward"]))
    db.close()
    return Recording(run=d.name, budget_s=budget, cases=cases, total_train_s=total, skipped=skipped)


def abort_time(case: Case, rule: extrapolate.Rule, budget_s: float) -> float | None:
    """The elapsed second at which a worker would have aborted this run under `rule`, or None."""
    check = extrapolate.Checker(rule, budget_s)
    for i, point in enumerate(case.curve):
        if point[0] < check.next_check:
            continue
        v = check(case.curve[:i + 1])
        if v is not None and v.abort:
            return case.curve[i][0]
    return None


def replay(recordings: list[Recording], z: float, margin: float = 0.0, every: float = 0.1,
           min_frac: float = 0.2) -> Result:
    res = Result(z=z, margin=margin, every=every, min_frac=min_frac)
    for rec in recordings:
        res.total_s += rec.total_train_s
        for case in rec.cases:
            res.candidates += 1
            res.accepted += case.accepted
            res.improved += case.improved
            rule = extrapolate.Rule(reference=case.reference, z=z, margin=margin, every=every, min_frac=min_frac)
            t = abort_time(case, rule, rec.budget_s)
            if t is None:
                continue
            res.aborted += 1
            res.saved_s += max(0.0, case.train_s - t)
            res.false_aborts += case.accepted
            res.improved_aborted += case.improved
            res.aborted_rewards.append(case.reward)
    return res


GRID = {"z": (0.0, 0.5, 1.0, 2.0, 3.0), "margin": (0.0,), "every": (0.1,), "min_frac": (0.1, 0.2, 0.3, 0.5)}


def grid(recordings: list[Recording], grid: dict = GRID) -> list[Result]:
    keys = ("z", "margin", "every", "min_frac")
    return [replay(recordings, **dict(zip(keys, combo))) for combo in itertools.product(*(grid[k] for k in keys))]


def choose(results: list[Result], max_false: float = 0.05, max_lost: float = 0.2) -> Result | None:
    """The rule that saves the most compute with at most `max_false` of the accepted candidates aborted and
    at most `max_lost` of the improvements (val_bpb below the incumbent's, accepted or not) aborted: with
    few accepted candidates in a recording the first count is coarse, and the second keeps the choice
    away from rules that only got lucky. Ties: the more cautious rule (higher z, then later min_frac)."""
    ok = [r for r in results if r.false_frac <= max_false
          and (r.improved_aborted / r.improved if r.improved else 0.0) <= max_lost]
    return max(ok, key=lambda r: (round(r.saved_frac, 4), r.z, r.min_frac)) if ok else None


def table(results: list[Result]) -> str:
    head = "| z | margin | every | min_frac | aborted / candidates | compute saved | false aborts (accepted) | " \
           "aborted improvements | their recorded reward |\n|---|---|---|---|---|---|---|---|---|"
    lines = [head]
    for r in results:
        lines.append(f"| {r.z:g} | {r.margin:g} | {r.every:g} | {r.min_frac:g} | {r.aborted} / {r.candidates} | "
                     f"{100 * r.saved_frac:.1f}% ({r.saved_s:.0f} of {r.total_s:.0f} s) | "
                     f"{r.false_aborts} of {r.accepted} ({100 * r.false_frac:.1f}%) | "
                     f"{r.improved_aborted} of {r.improved} | "
                     f"{'—' if r.aborted_reward is None else format(r.aborted_reward, '+.2f')} |")
    return "\n".join(lines)
