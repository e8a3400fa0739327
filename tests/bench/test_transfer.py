"""`arrl bench transfer` on a small family: the warm start learns from the training members only, and every
held-out member gets every method."""

from __future__ import annotations

import json

import pytest

from arrl import config as config_mod
from arrl.bench import family, transfer
from arrl.cli import main


def test_transfer_on_a_small_family(tmp_path, shared_ray):
    fam = tmp_path / "fam"
    info = family.write(4, 3, 1, fam)
    (held,) = info["held_out"]
    base = config_mod.from_dict({"target": "synthetic", "search": {"noise_runs": 2},
                                 "workers": {"sandbox": "simulated", "count": 2, "budget_s": 0.3}})
    methods = ["random", "tune", "tune-warm"]
    result = transfer.run(fam, 4, [0], methods, base, log=lambda s: None)
    # the past is every Tune trial of the training members, and only theirs
    assert sorted(p.name for p in (fam / "transfer" / "training").iterdir()) == sorted(info["train"])
    assert result["warm_trials"] == 4 * len(info["train"])
    warm = json.loads((fam / "transfer" / "held_out" / held / "runs" / f"{held}-tune-warm-s0" / "config.json")
                      .read_text())
    assert warm["tune"]["warm"] == 4 * len(info["train"]) and warm["target"].endswith(held)
    (row,) = result["rows"]
    assert row["member"] == held and row["seed"] == 0 and set(row["methods"]) == set(methods)
    for m in methods:  # the member's bowl: its optimum is 1.0, the synthetic values span up to about 1.4
        assert 0.99 < row["methods"][m]["best"] < 1.5, (m, row)
    text = (fam / "transfer" / "transfer.md").read_text()
    assert f"| {held} | 0 |" in text and "| median over all |" in text
    assert json.loads((fam / "transfer" / "transfer.json").read_text()) == result


def test_transfer_bad_input(tmp_path, capsys):
    with pytest.raises(config_mod.ConfigError, match="not a family written by `arrl bench family`"):
        transfer.run(tmp_path, 4, [0], ["random"])
    family.write(0, 2, 1, tmp_path / "fam")
    with pytest.raises(config_mod.ConfigError, match="random is the bar"):
        transfer.run(tmp_path / "fam", 4, [0], ["tune"])
    assert main(["bench", "transfer", str(tmp_path / "fam"), "--experiments", "4", "--methods", "random,grid"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown method 'grid'" in err and "\n" not in err
