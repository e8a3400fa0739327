"""Self-evaluation for early abort: is a running candidate going to lose to the incumbent?

The rule compares the candidate's training loss with the incumbent's **at the same elapsed
time**, not with the incumbent's final loss. (A first version fitted a power law
L(t) = a·t^(-b) + c to the candidate's curve and compared its extrapolated final loss
with the incumbent's final loss. Replayed on recorded tiny-target runs it aborted accepted
edits: the target's learning-rate schedule makes the last part of every curve drop faster
than any power law fitted to the first part predicts, and a smaller model whose curve
flattens early was "predicted" to lose while leading at every moment. See
docs/RESEARCH.md.) Comparing at the same time lets the schedule, warm-up and start-up
cost cancel.

At each checkpoint t (every `every` of the budget T, not before `min_frac`·T, nor at the end of
the budget, where stopping would save little and lose the run's evaluation):

- gap(t): the candidate's mean loss over the last window (t - every·T, t] minus the mean
  over the incumbent's runs (the baselines, or the accepted edit and its confirmations)
  of their mean loss over the same window;
- sigma: the run-to-run spread of the incumbent's own runs (the standard deviation of
  their window means, median over the checkpoints so far from min_frac·T on), floored at
  SIGMA_FLOOR of its loss; with a single incumbent run, SIGMA_ONE_RUN of its loss;
- bar = z·sigma·sqrt(1 + 1/n) + margin (n incumbent runs): a gap beyond it is unlikely to
  be noise with confidence z;
- trend: a candidate that is closing the gap is given the benefit of it: the slope of the
  last three checkpoints' gaps, if negative, is extended to T.

The run is aborted when gap(t) > bar and the gap extended to T is still > bar.

Only the training loss the run reports is used (`env.progress`, untrusted). That is safe
for this purpose: a lying script can at most avoid being aborted (and then pays its whole
budget) or get itself aborted; its reward still comes from the environment's val_bpb.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

SIGMA_FLOOR = 0.002    # of the incumbent's loss: identical runs (a deterministic target) are not noiseless
SIGMA_ONE_RUN = 0.01   # of the incumbent's loss, when it has one run and so no spread to measure
TREND_POINTS = 3


def final_loss(curve, min_points: int = 5) -> float | None:
    """A finished run's final training loss: the mean of the last tenth of its curve's points
    ((elapsed, step, loss) rows); None for a curve of fewer than `min_points` points."""
    losses = [p[2] for p in curve if isinstance(p, (list, tuple)) and len(p) == 3 and p[2] is not None]
    if len(losses) < min_points:
        return None
    tail = losses[-max(1, len(losses) // 10):]
    return float(sum(tail) / len(tail))


def points(curve) -> list[tuple]:
    """(elapsed, step, loss) rows of a live curve: env.progress Points from the sandboxes, tuples from the
    simulated backend."""
    return [tuple(p) if isinstance(p, (list, tuple)) else (p.elapsed, p.step, p.train_loss) for p in curve]


def window_mean(points, start: float, end: float) -> float | None:
    """Mean loss of the (elapsed, loss) points with start < elapsed <= end; None if there are none."""
    vals = [loss for e, loss in points if start < e <= end and loss is not None and math.isfinite(loss)]
    return sum(vals) / len(vals) if vals else None


@dataclass(frozen=True)
class Rule:
    """An early-abort rule: the `[search]` abort settings plus the incumbent's runs to compare with,
    each a sequence of (elapsed_s, loss) points."""
    reference: tuple
    z: float = 1.0
    margin: float = 0.0
    every: float = 0.1
    min_frac: float = 0.2


@dataclass(frozen=True)
class Verdict:
    abort: bool
    gap: float | None          # candidate minus incumbent, mean loss over the last window
    bar: float | None          # the gap an abort needs
    projected: float | None    # the gap extended to the end of the budget by its trend
    reason: str


def _sigma(runs, t: float, window: float, start: float, inc: float) -> float:
    spreads = []
    k = 1
    while k * window <= t + 1e-9:
        end = k * window
        if end >= start - 1e-9:
            means = [m for m in (window_mean(r, end - window, end) for r in runs) if m is not None]
            if len(means) >= 2:
                spreads.append(statistics.stdev(means))
        k += 1
    if not spreads:
        return SIGMA_ONE_RUN * abs(inc)
    return max(statistics.median(spreads), SIGMA_FLOOR * abs(inc))


def judge(curve, budget_s: float, rule: Rule, history=()) -> Verdict:
    """Judge a candidate at the last point of `curve` ((elapsed, step, loss) rows). `history`:
    (elapsed, gap) of the earlier checkpoints, for the trend."""
    pts = [(float(p[0]), float(p[2])) for p in curve if p[0] is not None and p[2] is not None]
    if not pts:
        return Verdict(False, None, None, None, "no curve yet")
    t, window = pts[-1][0], rule.every * budget_s
    runs = [[(float(e), float(loss)) for e, loss in r] for r in rule.reference]
    cand = window_mean(pts, t - window, t)
    incs = [m for m in (window_mean(r, t - window, t) for r in runs) if m is not None]
    if cand is None or not incs:
        return Verdict(False, None, None, None, "no incumbent curve at this time")
    inc = sum(incs) / len(incs)
    gap = cand - inc
    if t < rule.min_frac * budget_s:
        return Verdict(False, gap, None, None, "too early")
    if t > budget_s - window / 2:  # the last checkpoint: aborting now would save little and lose the evaluation
        return Verdict(False, gap, None, None, "at the end of its budget")
    n = len(incs)
    sigma = _sigma(runs, t, window, rule.min_frac * budget_s, inc)
    bar = rule.z * sigma * math.sqrt(1 + 1 / n) + rule.margin
    trend = list(history)[-(TREND_POINTS - 1):] + [(t, gap)]
    projected = gap
    if len(trend) >= TREND_POINTS:
        xs, ys = [p[0] for p in trend], [p[1] for p in trend]
        xm, ym = sum(xs) / len(xs), sum(ys) / len(ys)
        var = sum((x - xm) ** 2 for x in xs)
        slope = sum((x - xm) * (y - ym) for x, y in zip(xs, ys)) / var if var > 0 else 0.0
        projected = gap + min(slope, 0.0) * max(budget_s - t, 0.0)
    where = f"at {t:.0f} s of {budget_s:.0f} s"
    if gap > bar and projected > bar:
        return Verdict(True, gap, bar, projected,
                       f"training loss trails the incumbent's by {gap:.4f} {where} (bar {bar:.4f}: z={rule.z:g} "
                       f"x spread {sigma:.4f}); its trend leaves it {projected:.4f} behind at the end")
    return Verdict(False, gap, bar, projected, f"gap {gap:+.4f} {where} is within the bar {bar:.4f} or closing")


class Checker:
    """Applies a rule to a growing curve the way a worker sees it: judged once each time the curve
    passes the next checkpoint (every `rule.every` of the budget), on all the points so far.
    The worker (live) and the replay tool (recorded curves) both use it."""

    def __init__(self, rule: Rule, budget_s: float):
        self.rule, self.budget_s = rule, budget_s
        self.next_check = rule.every * budget_s
        self.history: list[tuple[float, float]] = []

    def __call__(self, points) -> Verdict | None:
        """`points`: the curve so far, (elapsed, step, loss) rows. A Verdict at a checkpoint, else None."""
        if not points or points[-1][0] is None or points[-1][0] < self.next_check:
            return None
        while self.next_check <= points[-1][0]:
            self.next_check += self.rule.every * self.budget_s
        v = judge(points, self.budget_s, self.rule, self.history)
        if v.gap is not None:
            self.history.append((float(points[-1][0]), v.gap))
        return v


def reference_runs(root, run_ids: list[int], points: int = 400) -> list[list[tuple[float, float]]]:
    """An incumbent's learning curves, self-evaluation's reference: one (elapsed, loss) list per run of
    `run_ids` (the baselines, or an accepted edit and its confirmations: `Queries.incumbent_run_ids`), each
    averaged down to at most `points` points. `root`: the run directory, whose experiments/<id>/curve.json
    the driver wrote."""
    runs = []
    for exp_id in run_ids:
        try:
            curve = json.loads((Path(root) / "experiments" / f"{exp_id:06d}" / "curve.json").read_text())
        except (OSError, ValueError):
            continue
        pts = [(float(p[0]), float(p[2])) for p in curve if isinstance(p, list) and len(p) == 3 and None not in p]
        if len(pts) < 5:
            continue
        step = max(1, math.ceil(len(pts) / points))
        runs.append([(sum(e for e, _ in pts[i:i + step]) / len(pts[i:i + step]),
                      sum(v for _, v in pts[i:i + step]) / len(pts[i:i + step])) for i in range(0, len(pts), step)])
    return runs
