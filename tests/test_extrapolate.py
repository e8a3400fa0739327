"""Learning-curve extrapolation and the abort rule on synthetic curves with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from arrl import extrapolate


def curve(a=2.0, b=0.5, c=1.5, t_end=30.0, n=300, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.linspace(0.1, t_end, n)
    y = a * t ** -b + c + rng.normal(0, noise, n)
    return [(float(ti), i, float(yi)) for i, (ti, yi) in enumerate(zip(t, y))]


def test_exact_power_law_is_recovered():
    pts = curve()
    f = extrapolate.fit([p[0] for p in pts], [p[2] for p in pts])
    assert f.b == pytest.approx(0.5, rel=0.05) and f.c == pytest.approx(1.5, abs=0.02)
    assert f.loss(300.0) == pytest.approx(2.0 * 300 ** -0.5 + 1.5, abs=0.01)


@pytest.mark.parametrize("seed", range(5))
def test_prediction_from_the_first_third_covers_the_truth(seed):
    """Fitted on 0..10 s of a noisy curve, the interval at 30 s holds the true value."""
    pts = curve(noise=0.02, t_end=10.0, n=100, seed=seed)
    f = extrapolate.fit([p[0] for p in pts], [p[2] for p in pts])
    mean, std = f.predict(30.0)
    truth = 2.0 * 30 ** -0.5 + 1.5
    assert abs(mean - truth) <= 2.5 * std and std < 0.2


def test_too_few_points_or_garbage_give_no_fit():
    assert extrapolate.fit([1, 2, 3], [3, 2, 1]) is None
    assert extrapolate.fit([float("nan")] * 10, list(range(10))) is None
    assert extrapolate.fit([-1.0] * 10, list(range(10))) is None


def test_a_clearly_worse_run_is_aborted_and_a_better_one_is_not():
    reference = 2.0 * 30 ** -0.5 + 1.5  # the incumbent's final loss
    worse = curve(c=1.8, t_end=9.0, n=90, noise=0.01)  # 0.3 above, seen for 30% of the budget
    better = curve(c=1.3, t_end=9.0, n=90, noise=0.01)
    same = curve(c=1.5, t_end=9.0, n=90, noise=0.01)
    v = extrapolate.judge(worse, 30.0, reference)
    assert v.abort and v.predicted > reference, v
    assert not extrapolate.judge(better, 30.0, reference).abort
    assert not extrapolate.judge(same, 30.0, reference).abort  # could tie: keep it


def test_never_before_the_minimum_fraction_or_on_a_flat_start():
    reference = 1.0
    early = curve(c=3.0, t_end=3.0, n=30)  # 10% of a 30 s budget
    assert extrapolate.judge(early, 30.0, reference, min_frac=0.2).reason == "too early"
    assert not extrapolate.judge([], 30.0, reference).abort
    assert not extrapolate.judge([(10.0, 1, 5.0)] * 3, 30.0, reference).abort


def test_a_rising_curve_is_fitted_flat_not_extrapolated_downward():
    pts = [(float(t), t, 2.0 + 0.01 * t) for t in range(1, 40)]
    f = extrapolate.fit([p[0] for p in pts], [p[2] for p in pts])
    assert f.a == 0.0 and f.predict(100.0)[0] == pytest.approx(np.mean([p[2] for p in pts if p[0] >= 3.9]), abs=0.05)


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


@pytest.mark.parametrize("floor,reference,aborted", [(3.0, 1.0, True), (0.5, 3.0, False)])
def test_a_worker_stops_a_run_that_will_not_beat_the_incumbent(shakespeare_dir, tmp_path, floor, reference, aborted):
    """In the real process sandbox: a run heading for loss ~3.4 against an incumbent at 1.0 is stopped early
    with status `aborted`; one heading below the incumbent's 3.0 runs its whole budget."""
    import time

    from arrl.worker import ExperimentWorker

    w = ExperimentWorker("w", "shakespeare", {"budget_s": 6.0, "grace_s": 20.0, "memory_mb": 2048, "threads": 1},
                         data_home=str(shakespeare_dir.parent), scratch=str(tmp_path / "scratch"))
    rule = {"reference": reference, "z": 2.0, "margin": 0.0, "every": 0.1, "min_frac": 0.2}
    t0 = time.monotonic()
    out = w.run(1, SCRIPT.format(floor=floor), seed=0, abort=rule)["outcome"]
    if aborted:
        assert out["status"] == "aborted", out
        assert out["message"].startswith("aborted by self-evaluation: predicted final loss")
        assert time.monotonic() - t0 < 6.0 + 5  # stopped at a checkpoint, not at budget + grace
        assert out["curve"][-1][0] < 0.5 * 6.0  # at one of the first checkpoints after 20% of the budget
    else:
        assert out["status"] != "aborted", out
        assert out["curve"][-1][0] >= 5.5  # trained to the end of its budget
