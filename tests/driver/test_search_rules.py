"""Unit tests of the search rules: noise and acceptance, reward, the oracle, de-duplication, config, ledger."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from arrl import config as config_mod
from arrl.driver import noise as acceptance
from arrl.driver import oracle
from arrl.config import ConfigError, OracleSection, RewardSection
from arrl.driver.identity import normalize
from arrl.driver.reward import reward
from arrl.ledger.store import Store, StoreError


def test_noise_estimate_is_a_scaled_median_of_pairwise_differences_with_a_floor():
    # five baselines: 10 differences, sorted 0.01 x4, 0.02 x3, 0.03 x2, 0.04 -> median 0.02, over its normal value
    n = acceptance.estimate([3.50, 3.51, 3.52, 3.53, 3.54], min_sigma=0.001)
    assert n.raw == pytest.approx(0.02 / acceptance.consistency((5,))) and n.sigma == n.raw
    assert (n.runs, n.dof) == (5, 4)
    # for large samples the constant tends to sqrt(2) * 0.6745 (the median of |a - b| for sigma 1)
    assert acceptance.consistency((40,)) == pytest.approx(math.sqrt(2) * 0.6745, rel=0.03)
    # three runs alone: one run takes part in 2 of the 3 differences, so the smallest is used (0.02, not 0.04)
    n = acceptance.estimate([3.50, 3.52, 3.54], min_sigma=0.001)
    assert n.raw == pytest.approx(0.02 / acceptance.consistency((3,)))
    assert acceptance.estimate([3.5, 3.5], 0.005).sigma == 0.005  # identical runs: the floor
    assert acceptance.estimate([3.5, float("nan"), None], 0.004).runs == 1


def test_one_bad_run_cannot_multiply_sigma():
    # the case: two quiet baselines 3.65 and 3.66 and one that lost its cores (14 steps, 4.75)
    quiet = acceptance.estimate([3.65, 3.66, 3.655], 0.0).raw
    robust = acceptance.estimate([3.65, 3.66, 4.75], 0.0).raw
    sd = statistics.stdev([3.65, 3.66, 4.75])
    assert sd > 0.6 and robust < 0.05 and robust < 3 * max(quiet, 0.01)
    # the default's five baselines with one wild run: at most about 1.8x, however wild
    five = [3.560, 3.571, 3.582, 3.566, 3.577]
    calm = acceptance.estimate(five, 0.0).raw
    for wild in (3.70, 4.75, 40.0):
        assert calm < acceptance.estimate(five[:4] + [wild], 0.0).raw < 1.8 * calm
    # pooled with confirmation pairs: one wild pair among ten moves it by less than a fifth
    pairs = [[3.0 + i, 3.0 + i + 0.01 * (-1) ** i] for i in range(10)]
    base = acceptance.pooled(pairs, 0.0).raw
    assert acceptance.pooled(pairs[:-1] + [[3.0, 3.8]], 0.0).raw < 1.2 * base
    # the centre: the median, not the mean
    assert acceptance.centre([3.65, 3.66, 4.75]) == 3.66
    assert math.isnan(acceptance.centre([None, float("nan")]))


@pytest.mark.parametrize("sizes", [(5,), (3,), (5, 2, 2), (3, 2, 2, 2, 2, 2)])
def test_robust_sigma_is_median_unbiased_for_normal_noise(sizes):
    rng = random.Random(7)
    est = [acceptance.pooled([[rng.gauss(0.0, 0.01) for _ in range(n)] for n in sizes], 0.0).raw for _ in range(2000)]
    assert statistics.median(est) == pytest.approx(0.01, rel=0.06)


def test_five_baselines_land_within_2x_of_sigma_more_often_than_the_median_deviation_did():
    """The reason for the estimator: on five normal runs the old median of deviations from the median (one of
    the five is always 0) was within 2x of sigma about 73% of the time; the pairwise median about 88%."""
    rng = random.Random(11)
    hits = 0
    for _ in range(2000):
        est = acceptance.estimate([rng.gauss(0.0, 1.0) for _ in range(5)], 0.0).raw
        hits += 0.5 <= est <= 2.0
    assert 0.84 < hits / 2000 < 0.92


def test_pooled_noise_uses_differences_within_each_source():
    # differences: (3.50, 3.51, 3.53, 3.56, 3.60) -> 0.01 0.03 0.06 0.10 0.02 0.05 0.09 0.03 0.07 0.04; (3.40, 3.42)
    # -> 0.02; a single run and NaN add nothing; 11 differences sorted, the 6th is 0.04
    n = acceptance.pooled([[3.50, 3.51, 3.53, 3.56, 3.60], [3.40, 3.42], [3.0], [3.1, float("nan")]], min_sigma=0.001)
    assert n.raw == pytest.approx(0.04 / acceptance.consistency((2, 5))) and n.sigma == n.raw
    assert (n.runs, n.dof) == (9, 5)
    # a wide pair raises it, a tight one lowers it, and the floor still holds
    assert acceptance.pooled([[3.5, 3.52], [3.4, 3.5]], 0.0).raw > acceptance.estimate([3.5, 3.52], 0.0).raw
    assert acceptance.pooled([[3.5, 3.52], [3.4, 3.4]], 0.0).raw < acceptance.estimate([3.5, 3.52], 0.0).raw
    assert acceptance.pooled([[3.5, 3.5], [3.4, 3.4]], 0.003).sigma == 0.003
    assert acceptance.pooled([], 0.003) == acceptance.Noise(0.003, 0, 0.0, 0)


def test_noise_warning_names_an_implausible_sigma_or_too_few_dof():
    assert acceptance.warning(acceptance.Noise(0.63, 3, 0.63, 2), 0.1).startswith("sigma 0.6300 is above 0.1 bpb")
    assert "1 degree(s) of freedom" in acceptance.warning(acceptance.Noise(0.01, 2, 0.01, 1), 0.1)
    assert acceptance.warning(acceptance.Noise(0.01, 3, 0.01, 2), 0.1) is None
    assert acceptance.warning(acceptance.Noise(5.0, 3, 5.0, 2), 0.0) is None  # no check for the target
    # pooled sigma high while the baselines' own is plausible: the pooled configurations, not contention
    pooled, base = acceptance.Noise(0.187, 14, 0.187, 7), acceptance.Noise(0.033, 5, 0.033, 4)
    msg = acceptance.warning(pooled, 0.1, base)
    assert "baselines alone give 0.0330" in msg and "contention" not in msg, msg
    assert "contention" in acceptance.warning(pooled, 0.1, acceptance.Noise(0.15, 5, 0.15, 4))


def test_acceptance_margin_follows_the_noise():
    noise = acceptance.Noise(0.01, 3, 0.01)
    # one run vs the median of 3 incumbent runs (as precise as a mean of 6/pi): margin = 2 * 0.01 * sqrt(1 + pi/6)
    assert acceptance.margin(noise, 2.0, 1, 3) == pytest.approx(0.02 * math.sqrt(1 + math.pi / 6))
    assert acceptance.margin(noise, 2.0, 1, 2) == pytest.approx(0.02 * math.sqrt(1.5))  # a median of 2 is their mean
    assert acceptance.promising(3.47, 3.5, noise, 2.0, 3)
    assert not acceptance.promising(3.476, 3.5, noise, 2.0, 3)
    assert not acceptance.promising(None, 3.5, noise, 2.0, 3)
    # two runs: margin = 2 * 0.01 * sqrt(1/2 + pi/6) = 0.0201
    assert acceptance.confirmed([3.476, 3.483], 3.5, noise, 2.0, 3)
    assert not acceptance.confirmed([3.476, 3.50], 3.5, noise, 2.0, 3)  # the re-run did not hold up
    assert not acceptance.confirmed([3.40, None], 3.5, noise, 2.0, 3)


def test_reward_scales_by_noise_clips_and_penalises():
    cfg = RewardSection(clip_sigmas=3.0, crash=-2.0, simplicity=0.1)
    assert reward("ok", 3.48, 3.50, 0.01, cfg) == pytest.approx(2.0)
    assert reward("ok", 3.40, 3.50, 0.01, cfg) == 3.0  # clipped
    assert reward("ok", 3.80, 3.50, 0.01, cfg) == -3.0
    assert reward("ok", 3.49, 3.50, 0.01, cfg, lines_added=5) == pytest.approx(1.0 - 0.5)
    assert reward("crash", None, 3.5, 0.01, cfg) == -2.0
    assert reward("ok", float("nan"), 3.5, 0.01, cfg) == cfg.invalid_metric
    with pytest.raises(ValueError, match="no reward rule"):
        reward("weird", None, 3.5, 0.01, cfg)


@pytest.mark.parametrize("field,value,progress,expect", [
    ("max_experiments", 10, dict(experiments=10), "experiment budget"),
    ("max_wall_s", 60.0, dict(wall_s=61.0), "wall-clock budget"),
    ("max_gpu_hours", 1.0, dict(gpu_hours=1.5), "GPU-hour budget"),
    ("target_bpb", 3.4, dict(incumbent_bpb=3.39), "target val_bpb"),
    ("plateau", 5, dict(since_accept=5), "plateau"),
    ("max_failed_edits", 50, dict(failed_edits_in_a_row=50), "edits all failed"),
])
def test_each_oracle_rule(field, value, progress, expect):
    base = dict(experiments=0, since_accept=0, wall_s=0.0, gpu_hours=0.0, incumbent_bpb=3.5)
    cfg = OracleSection(max_experiments=0, max_failed_edits=0)
    assert oracle.check(oracle.Progress(**base), cfg) is None
    setattr(cfg, field, value)
    assert oracle.check(oracle.Progress(**base), cfg) is None
    assert expect in oracle.check(oracle.Progress(**{**base, **progress}), cfg)
    assert oracle.check(oracle.Progress(**{**base, "stop_requested": True}), cfg) == "stop requested"


def test_normalize_ignores_comments_and_formatting_only():
    a = "x = 1  # one\ny = [1,2]\n"
    b = "# header\nx = 1\ny = [1, 2]\n"
    assert normalize(a) == normalize(b)
    assert normalize(a) != normalize("x = 2\ny = [1, 2]\n")


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"\[workers\] count: expected int, got str"):
        config_mod.from_dict({"workers": {"count": "4"}})
    with pytest.raises(ConfigError, match=r"\[search\] margin_zz: unknown field"):
        config_mod.from_dict({"search": {"margin_zz": 2}})
    with pytest.raises(ConfigError, match="unknown field 'polcy'"):
        config_mod.from_dict({"polcy": {}})
    with pytest.raises(ConfigError, match=r"\[policy\] fmt: 'json' is not one of"):
        config_mod.from_dict({"policy": {"fmt": "json"}})
    with pytest.raises(ConfigError, match=r"\[search\] confirm: expected bool, got int"):
        config_mod.from_dict({"search": {"confirm": 1}})
    with pytest.raises(ConfigError, match=r"\[workers\] count: must be > 0"):
        config_mod.from_dict({"workers": {"count": 0}})
    with pytest.raises(ConfigError, match="base_url: required"):
        config_mod.from_dict({"policy": {"kind": "external"}})
    bad = tmp_path / "bad.toml"
    bad.write_text("[workers\ncount = 1")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        config_mod.load(bad)
    assert config_mod.from_dict({"search": {"margin_z": 3}}).search.margin_z == 3.0  # int for float is fine


def test_ledger_records_once_and_requeues_running(tmp_path):
    s = Store(tmp_path / "r")
    with s.tx():
        e = s.add_experiment("candidate", 1, "a", "n")
    s.mark_running(e, "worker-0")
    assert s.requeue_running() == [e]
    assert s.experiment(e)["state"] == "pending"
    assert s.finish(e, status="ok", val_bpb=3.4) is True
    assert s.finish(e, status="crash") is False  # never counted twice
    assert s.experiment(e)["status"] == "ok"
    with pytest.raises(RuntimeError):
        with s.tx():
            s.add_experiment("candidate", 2, "b", "m")
            raise RuntimeError("die inside a transaction")
    assert len(s.experiments()) == 1  # rolled back
    s.close()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "ledger.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match="ledger is unreadable"):
        Store(tmp_path / "junk")
    assert (tmp_path / "junk" / "ledger.sqlite").read_bytes().startswith(b"not a database")
