"""Self-evaluation's abort rule on synthetic curves with known answers, and in a worker's real sandbox."""

from __future__ import annotations

import numpy as np
import pytest

from arrl.worker import abort as extrapolate
from arrl.worker.abort import Rule


def curve(floor=1.5, a=2.0, b=0.5, t_end=30.0, n=300, noise=0.0, seed=0, drop_at=None):
    """(elapsed, step, loss) rows of a power-law curve; `drop_at`: from this time on the loss falls
    linearly by a further 0.2 (a learning-rate decay at the end of a schedule)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.1, t_end, n)
    y = a * t ** -b + floor + rng.normal(0, noise, n)
    if drop_at is not None:
        y = y - 0.2 * np.clip((t - drop_at) / (30.0 - drop_at), 0, 1)
    return [(float(ti), i, float(yi)) for i, (ti, yi) in enumerate(zip(t, y))]


def runs(*curves):
    return tuple([(e, loss) for e, _, loss in c] for c in curves)


INCUMBENT = runs(*(curve(noise=0.01, seed=s, drop_at=20.0) for s in range(3)))


def replayed(points, rule, budget=30.0):
    """Feed a curve point by point to a Checker, as a worker does; the first aborting verdict or None."""
    check = extrapolate.Checker(rule, budget)
    for i in range(len(points)):
        v = check(points[:i + 1])
        if v is not None and v.abort:
            return points[i][0], v
    return None


def test_a_clearly_worse_run_is_aborted_early_and_a_better_or_equal_one_never():
    rule = Rule(INCUMBENT, z=1.0, min_frac=0.2)
    hit = replayed(curve(floor=1.8, noise=0.01, seed=7, drop_at=20.0), rule)
    assert hit is not None and 6.0 <= hit[0] < 7.5, hit  # at the first checkpoint from 20% on
    assert hit[1].gap == pytest.approx(0.3, abs=0.03) and "trails the incumbent" in hit[1].reason
    assert replayed(curve(floor=1.3, noise=0.01, seed=8, drop_at=20.0), rule) is None
    assert replayed(curve(floor=1.5, noise=0.01, seed=9, drop_at=20.0), rule) is None  # a tie is kept


def test_the_schedule_drop_at_the_end_does_not_fool_it():
    """The incumbent's curve falls at the end (learning-rate decay). A candidate with the same schedule that
    leads at every moment must never be aborted, though a power law fitted to its start under-predicts its end."""
    rule = Rule(INCUMBENT, z=0.0, min_frac=0.1)
    assert replayed(curve(floor=1.45, noise=0.01, seed=3, drop_at=20.0), rule) is None


def test_a_candidate_closing_the_gap_is_kept():
    """Behind at first (a longer warm-up) but catching up fast and ahead at the end: the trend of its last
    three checkpoints' gaps carries it under the bar."""
    t = np.linspace(0.1, 30.0, 300)
    y = 2.0 * t ** -0.5 + 1.45 + 0.6 * np.exp(-t / 6.0)
    closing = [(float(a), i, float(b)) for i, (a, b) in enumerate(zip(t, y))]
    noiseless = runs(curve(), curve())
    assert replayed(closing, Rule(noiseless, z=1.0, min_frac=0.3)) is None
    flat_behind = [(e, s, loss + 0.3) for e, s, loss in curve()]
    assert replayed(flat_behind, Rule(noiseless, z=1.0, min_frac=0.3)) is not None


def test_confidence_scales_with_the_incumbents_run_to_run_spread():
    """The same 0.05 gap is an abort against quiet incumbent runs and noise against noisy ones."""
    cand = curve(floor=1.55, noise=0.005, seed=11)
    quiet = runs(*(curve(noise=0.005, seed=s) for s in range(3)))
    loud = runs(*(curve(floor=1.5 + d, noise=0.005, seed=s) for s, d in enumerate((-0.08, 0.0, 0.08))))
    assert replayed(cand, Rule(quiet, z=2.0)) is not None
    assert replayed(cand, Rule(loud, z=2.0)) is None


def test_never_before_the_minimum_fraction_nor_without_a_reference():
    rule = Rule(INCUMBENT, z=0.0, min_frac=0.5)
    early = curve(floor=3.0, t_end=14.0, n=140)
    assert replayed(early, rule) is None
    assert extrapolate.judge(early[:50], 30.0, rule).reason == "too early"
    assert not extrapolate.judge([], 30.0, rule).abort
    assert extrapolate.judge(curve(floor=3.0), 30.0, Rule((), z=0.0)).reason == "no incumbent curve at this time"
    # an incumbent with one run: the spread is a fixed share of its loss
    one = Rule(runs(curve()), z=1.0)
    v = extrapolate.judge(curve(floor=1.5 + 0.01, t_end=9.0, n=90), 30.0, one)
    assert not v.abort and v.bar == pytest.approx(extrapolate.SIGMA_ONE_RUN * 2.2 * np.sqrt(2), rel=0.2)


def test_final_loss():
    assert extrapolate.final_loss([(i, i, 5.0 if i < 90 else 1.0) for i in range(100)]) == 1.0
    assert extrapolate.final_loss([(1, 1, 1.0)] * 4) is None


SCRIPT = """
import math, time
from env import progress
run = progress.start()
step = 0
while not run.over_budget():
    step += 1
    run.report(step, {floor} + 2.0 / math.sqrt(1 + run.elapsed()))
    time.sleep(0.02)
"""


@pytest.mark.parametrize("floor,aborted", [(3.0, True), (0.5, False)])
def test_a_worker_stops_a_run_that_will_not_beat_the_incumbent(shakespeare_dir, tmp_path, floor, aborted):
    """In the real process sandbox: a run 1.5 above the incumbent's curve is stopped early with status
    `aborted`; one 1.0 below it runs its whole budget."""
    import time

    from arrl.worker.worker import ExperimentWorker

    w = ExperimentWorker("w", "shakespeare", {"budget_s": 6.0, "grace_s": 20.0, "memory_mb": 2048, "threads": 1},
                         data_home=str(shakespeare_dir.parent), scratch=str(tmp_path / "scratch"))
    incumbent = [[(0.05 * i, 1.5 + 2.0 / np.sqrt(1 + 0.05 * i)) for i in range(1, 121)]]
    rule = Rule(reference=incumbent, z=2.0, margin=0.0, every=0.1, min_frac=0.2)
    t0 = time.monotonic()
    out = w.run(1, SCRIPT.format(floor=floor), seed=0, abort=rule).to_dict()
    if aborted:
        assert out["status"] == "aborted", out
        assert out["message"].startswith("aborted by self-evaluation: training loss trails")
        assert time.monotonic() - t0 < 6.0 + 5  # stopped at a checkpoint, not at budget + grace
        assert out["curve"][-1][0] < 0.5 * 6.0  # at one of the first checkpoints after 20% of the budget
    else:
        assert out["status"] != "aborted", out
        assert out["curve"][-1][0] >= 5.5  # trained to the end of its budget
