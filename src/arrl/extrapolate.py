"""Learning-curve extrapolation for early abort: fit L(t) = a·t^(-b) + c, predict the final loss.

The fit is a grid over the exponent b with closed-form least squares for (a, c) at each b
(no optimiser to diverge, deterministic). The prediction's uncertainty combines the
residual noise with the spread of the predictions of every b whose fit is not much worse
than the best (a profile-likelihood band), so a curve that could still bend either way
reports a wide interval.

Only the training loss the run reports is used (`env.progress`, untrusted). That is safe
for this purpose: a lying script can at most avoid being aborted (and then pays its whole
budget) or get itself aborted; its reward still comes from the environment's val_bpb.
A candidate is compared with the incumbent's own recorded curve (same target, same loss),
not with val_bpb.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EXPONENTS = np.round(np.exp(np.linspace(math.log(0.02), math.log(3.0), 80)), 5)
MIN_POINTS = 6


@dataclass(frozen=True)
class Fit:
    a: float
    b: float
    c: float
    sigma: float        # residual standard deviation of the loss around the fit
    n: int              # points used
    t_max: float        # the last time fitted
    band: tuple         # (b, a, c) of every exponent within the profile band

    def loss(self, t: float) -> float:
        return self.a * max(t, 1e-9) ** -self.b + self.c

    def predict(self, t: float) -> tuple[float, float]:
        """(mean, standard deviation) of the loss at time t."""
        preds = [a * max(t, 1e-9) ** -b + c for b, a, c in self.band]
        spread = (max(preds) - min(preds)) / 2 if preds else 0.0
        return self.loss(t), math.sqrt(self.sigma ** 2 + spread ** 2)


def _smooth(t: np.ndarray, y: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """Average the curve into at most `points` bins of equal time (noisy per-step losses)."""
    if len(t) <= points:
        return t, y
    edges = np.linspace(t[0], t[-1], points + 1)
    idx = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, points - 1)
    keep = [i for i in range(points) if np.any(idx == i)]
    return (np.array([t[idx == i].mean() for i in keep]), np.array([y[idx == i].mean() for i in keep]))


def fit(times, losses, skip_frac: float = 0.1, points: int = 60, band_z: float = 2.0) -> Fit | None:
    """Fit the power law to (time, loss) points; None when there is too little to fit.

    The first `skip_frac` of the elapsed time (warm-up, compilation) is left out.
    """
    t = np.asarray(times, dtype=float)
    y = np.asarray(losses, dtype=float)
    ok = np.isfinite(t) & np.isfinite(y) & (t > 0)
    t, y = t[ok], y[ok]
    if len(t) < MIN_POINTS:
        return None
    order = np.argsort(t)
    t, y = t[order], y[order]
    t, y = t[t >= t[-1] * skip_frac], y[t >= t[-1] * skip_frac]
    t, y = _smooth(t, y, points)
    if len(t) < MIN_POINTS:
        return None
    results = []
    for b in EXPONENTS:
        x = t ** -b
        xm, ym = x.mean(), y.mean()
        var = ((x - xm) ** 2).sum()
        if var <= 0:
            continue
        a = float(((x - xm) * (y - ym)).sum() / var)
        if a < 0:  # a rising curve: the law's decreasing shape does not hold; a = 0 is a flat line
            a = 0.0
        c = float(ym - a * xm)
        sse = float(((y - (a * x + c)) ** 2).sum())
        results.append((sse, float(b), a, c))
    if not results:
        return None
    results.sort()
    sse, b, a, c = results[0]
    n = len(t)
    dof = max(n - 3, 1)
    sigma = math.sqrt(sse / dof)
    # profile band: exponents whose fit is within band_z^2 (in units of the residual variance) of the best
    limit = sse + band_z ** 2 * sigma ** 2
    band = tuple((bb, aa, cc) for s, bb, aa, cc in results if s <= limit)
    return Fit(a=a, b=b, c=c, sigma=sigma, n=n, t_max=float(t[-1]), band=band)


def final_loss(curve, min_points: int = 5) -> float | None:
    """A finished run's final training loss: the mean of the last tenth of its curve's points
    ((elapsed, step, loss) rows); None for a curve of fewer than `min_points` points."""
    losses = [p[2] for p in curve if isinstance(p, (list, tuple)) and len(p) == 3 and p[2] is not None]
    if len(losses) < min_points:
        return None
    tail = losses[-max(1, len(losses) // 10):]
    return float(sum(tail) / len(tail))


@dataclass(frozen=True)
class Verdict:
    abort: bool
    predicted: float | None     # the candidate's predicted final loss
    std: float | None
    reference: float | None     # what it must beat: the incumbent's final loss
    reason: str


def judge(curve, budget_s: float, reference_loss: float, z: float = 2.0, margin: float = 0.0,
          min_frac: float = 0.2) -> Verdict:
    """Should a run with learning curve `curve` ((elapsed_s, step, loss), ...) be aborted?

    Abort when, with confidence z (one-sided), its loss at `budget_s` will not go below
    `reference_loss - margin`: predicted - z·std > reference - margin. Never before
    `min_frac` of the budget, and never without a fit.
    """
    pts = [(float(e), float(loss)) for e, _, loss in curve if e is not None and loss is not None]
    if not pts or pts[-1][0] < min_frac * budget_s:
        return Verdict(False, None, None, reference_loss, "too early")
    f = fit([p[0] for p in pts], [p[1] for p in pts])
    if f is None:
        return Verdict(False, None, None, reference_loss, "not enough points to fit")
    mean, std = f.predict(budget_s)
    bar = reference_loss - margin
    if mean - z * std > bar:
        return Verdict(True, mean, std, reference_loss,
                       f"predicted final loss {mean:.4f} ± {std:.4f} stays above {bar:.4f} (z={z:g})")
    return Verdict(False, mean, std, reference_loss, f"predicted final loss {mean:.4f} ± {std:.4f} may beat {bar:.4f}")


@dataclass(frozen=True)
class Rule:
    """An early-abort rule: the `[search]` abort settings plus the bar (the incumbent's final loss)."""
    reference: float
    z: float = 2.0
    margin: float = 0.0
    every: float = 0.1
    min_frac: float = 0.2


class Checker:
    """Applies a rule to a growing curve the way a worker sees it: judged once each time the curve
    passes the next checkpoint (every `rule.every` of the budget), on all the points so far.
    The worker (live) and the replay tool (recorded curves) both use it."""

    def __init__(self, rule: Rule, budget_s: float):
        self.rule, self.budget_s = rule, budget_s
        self.next_check = rule.every * budget_s

    def __call__(self, points) -> Verdict | None:
        """`points`: the curve so far, (elapsed, step, loss) rows. A Verdict at a checkpoint, else None."""
        if not points or points[-1][0] is None or points[-1][0] < self.next_check:
            return None
        while self.next_check <= points[-1][0]:
            self.next_check += self.rule.every * self.budget_s
        r = self.rule
        return judge(points, self.budget_s, r.reference, z=r.z, margin=r.margin, min_frac=r.min_frac)
