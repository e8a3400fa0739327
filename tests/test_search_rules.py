"""Unit tests of the search rules: noise and acceptance, reward, the oracle, de-duplication, config, ledger."""

from __future__ import annotations

import math

import pytest

from arrl import acceptance, config as config_mod, oracle
from arrl.config import ConfigError, OracleSection, RewardSection
from arrl.driver import normalize
from arrl.reward import reward
from arrl.store import Store, StoreError


def test_noise_estimate_is_the_sample_sd_with_a_floor():
    n = acceptance.estimate([3.50, 3.52, 3.54], min_sigma=0.001)
    assert n.sigma == pytest.approx(0.02) and n.raw == pytest.approx(0.02) and n.runs == 3
    assert acceptance.estimate([3.5, 3.5], 0.005).sigma == 0.005  # identical runs: the floor
    assert acceptance.estimate([3.5, float("nan"), None], 0.004).runs == 1


def test_pooled_noise_sums_squares_within_each_source():
    # (3.50, 3.52, 3.54): 0.0008 over 2 dof; (3.40, 3.42): 0.0002 over 1; a single run and NaN add nothing
    n = acceptance.pooled([[3.50, 3.52, 3.54], [3.40, 3.42], [3.0], [3.1, float("nan")]], min_sigma=0.001)
    assert n.raw == pytest.approx(math.sqrt(0.001 / 3)) and n.sigma == n.raw
    assert (n.runs, n.dof) == (7, 3)
    # a wide pair raises it, a tight one lowers it, and the floor still holds
    assert acceptance.pooled([[3.5, 3.52], [3.4, 3.5]], 0.0).raw > acceptance.estimate([3.5, 3.52], 0.0).raw
    assert acceptance.pooled([[3.5, 3.52], [3.4, 3.4]], 0.0).raw < acceptance.estimate([3.5, 3.52], 0.0).raw
    assert acceptance.pooled([[3.5, 3.5], [3.4, 3.4]], 0.003).sigma == 0.003
    assert acceptance.pooled([], 0.003) == acceptance.Noise(0.003, 0, 0.0, 0)


def test_acceptance_margin_follows_the_noise():
    noise = acceptance.Noise(0.01, 3, 0.01)
    # one run vs a 3-run incumbent mean: margin = 2 * 0.01 * sqrt(1 + 1/3) = 0.0231
    assert acceptance.margin(noise, 2.0, 1, 3) == pytest.approx(0.02 * math.sqrt(4 / 3))
    assert acceptance.promising(3.476, 3.5, noise, 2.0, 3)
    assert not acceptance.promising(3.480, 3.5, noise, 2.0, 3)
    assert not acceptance.promising(None, 3.5, noise, 2.0, 3)
    # two runs: margin = 2 * 0.01 * sqrt(1/2 + 1/3) = 0.01826
    assert acceptance.confirmed([3.476, 3.486], 3.5, noise, 2.0, 3)
    assert not acceptance.confirmed([3.476, 3.50], 3.5, noise, 2.0, 3)  # the re-run did not hold up
    assert not acceptance.confirmed([3.40, None], 3.5, noise, 2.0, 3)


def test_reward_scales_by_noise_clips_and_penalises():
    cfg = RewardSection(clip=3.0, crash=-2.0, simplicity=0.1)
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
