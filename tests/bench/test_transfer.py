"""`arrl bench transfer` on a small family: the warm start learns from the training members only, every
held-out member gets every method, and the perpetual run's adapter is served frozen on the held-out member."""

from __future__ import annotations

import json

import pytest

from arrl import config as config_mod
from arrl.bench import family, transfer
from arrl.cli import main
from arrl.driver import lineage
from arrl.ledger.reader import open_read_only


def test_transfer_on_a_small_family(tmp_path, shared_ray):
    fam = tmp_path / "fam"
    info = family.write(4, 3, 1, fam)
    (held,) = info["held_out"]
    base = config_mod.from_dict({"target": "synthetic", "search": {"noise_runs": 2},
                                 "workers": {"sandbox": "simulated", "count": 2, "budget_s": 0.3}})
    methods = ["random", "tune", "tune-warm", "optuna", "optuna-warm"]
    result = transfer.run(fam, 4, [0], methods, base, log=lambda s: None)
    # the past is every Tune trial of the training members, and only theirs
    assert sorted(p.name for p in (fam / "transfer" / "training").iterdir()) == sorted(info["train"])
    assert result["warm_trials"] == 4 * len(info["train"])
    warm = json.loads((fam / "transfer" / "held_out" / held / "runs" / f"{held}-tune-warm-s0" / "config.json")
                      .read_text())
    assert warm["tune"]["warm"] == 4 * len(info["train"]) and warm["target"].endswith(held)
    for m, asha, told in (("tune", True, 0), ("optuna", False, 0), ("optuna-warm", False, 4 * len(info["train"]))):
        conf = json.loads((fam / "transfer" / "held_out" / held / "runs" / f"{held}-{m}-s0" / "config.json")
                          .read_text())["tune"]
        assert (conf["asha"], conf["warm"]) == (asha, told), (m, conf)
    (row,) = result["rows"]
    assert row["member"] == held and row["seed"] == 0 and set(row["methods"]) == set(methods)
    for m in methods:  # the member's bowl: its optimum is 1.0, the synthetic values span up to about 1.4
        assert 0.99 < row["methods"][m]["best"] < 1.5, (m, row)
    text = (fam / "transfer" / "transfer.md").read_text()
    assert f"| {held} | 0 |" in text and "| median over all |" in text
    assert json.loads((fam / "transfer" / "transfer.json").read_text()) == result


def test_the_perpetual_run_is_served_frozen_on_the_held_out_member(tiny_model, tmp_path, shared_ray):
    """rl-frozen: the learning loop runs on each training member in turn, each run warm-started from the one
    before (by its path: another runs folder); on the held-out member the last adapter is served frozen, as
    version 1 and the only one, and the lineage names the whole chain."""
    fam = tmp_path / "fam"
    info = family.write(5, 3, 1, fam)
    (held,) = info["held_out"]
    base = config_mod.from_dict({
        "target": "synthetic", "search": {"noise_runs": 2, "history_k": 4},
        "policy": {"kind": "vllm", "model": str(tiny_model), "group_size": 4, "max_tokens": 64},
        "workers": {"sandbox": "simulated", "count": 2, "budget_s": 0.3},
        "learner": {"batch_size": 4, "lr": 1e-3}})
    result = transfer.run(fam, 12, [0], ["random", "rl-frozen"], base, log=lambda s: None)
    first, second = (fam / "transfer" / "perpetual" / t / "runs" / f"{t}-rl-s0" for t in info["train"])
    with open_read_only(first) as r:
        assert r.meta("lineage") is None and len(r.policy_versions()) >= 1  # the chain starts from the base
    with open_read_only(second) as r:
        assert r.meta("lineage")["dir"] == str(first.resolve())
        last = r.policy_versions()[-1]
        assert len(r.policy_versions()) >= 2  # it went on learning from the first run's adapter
    assert result["perpetual"] == str(second)
    frozen = fam / "transfer" / "held_out" / held / "runs" / f"{held}-rl-frozen-s0"
    with open_read_only(frozen) as r:
        (v1,) = r.policy_versions()  # served, never updated: the learner is off
        assert v1["frozen"] is True and v1["adapter_sha256"] == last["adapter_sha256"] and v1.get("loaded_at")
        assert v1["warm_start"] == {"run": second.name, "version": last["version"],
                                    "adapter_sha256": last["adapter_sha256"], "dir": str(second.resolve())}
        assert {a for (a,) in r.db.execute("SELECT DISTINCT adapter_version FROM proposals")} == {1}
    assert [x["run"] for x in lineage.chain(frozen)] == [second.name, first.name]
    assert not (frozen / "learner").exists()
    (row,) = result["rows"]
    assert set(row["methods"]) == {"random", "rl-frozen"} and row["methods"]["rl-frozen"]["best"] is not None


def test_transfer_bad_input(tmp_path, capsys):
    with pytest.raises(config_mod.ConfigError, match="not a family written by `arrl bench family`"):
        transfer.run(tmp_path, 4, [0], ["random"])
    family.write(0, 2, 1, tmp_path / "fam")
    with pytest.raises(config_mod.ConfigError, match="random is the bar"):
        transfer.run(tmp_path / "fam", 4, [0], ["tune"])
    assert main(["bench", "transfer", str(tmp_path / "fam"), "--experiments", "4", "--methods", "random,grid"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown method 'grid'" in err and "\n" not in err
    with pytest.raises(config_mod.ConfigError, match="the perpetual run needs a learning policy"):
        transfer.run(tmp_path / "fam", 4, [0], ["random", "rl-frozen"],
                     config_mod.from_dict({"policy": {"kind": "random"}}))
