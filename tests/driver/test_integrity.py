"""Integrity guards: implausible results are `suspicious`, unrewarded and unaccepted until a fresh run
reproduces them (unit rules, then the driver end to end on the synthetic target)."""

from __future__ import annotations

import json
import sqlite3
import subprocess

import pytest

from arrl import config as config_mod
from arrl.config import resolve
from arrl.driver import integrity
from arrl.launch import launch


def test_floor_and_far_beyond_the_noise_are_implausible():
    # below the floor, whatever the incumbent
    assert "below the floor" in integrity.implausible(0.5, 0.55, 0.01, 0.6, 20, 0.1)
    # 0.5 bpb better than 3.5 with sigma 0.01: 50 sigma and 14% -> suspicious
    assert "50 sigma" in integrity.implausible(3.0, 3.5, 0.01, 0.6, 20, 0.1)
    # far beyond the noise but small (2%): plausible; large but within 20 sigma: plausible
    assert integrity.implausible(3.43, 3.5, 0.001, 0.6, 20, 0.1) is None
    assert integrity.implausible(3.0, 3.5, 0.05, 0.6, 20, 0.1) is None
    # worse results and missing numbers are never suspicious
    assert integrity.implausible(3.9, 3.5, 0.01, 0.6, 20, 0.1) is None
    assert integrity.implausible(None, 3.5, 0.01, 0.6, 20, 0.1) is None
    assert resolve.floor_bpb(None, 0.6) == 0.6 and resolve.floor_bpb(1.2, 0.6) == 1.2


def test_reproduction_needs_agreement_and_the_floor():
    assert integrity.reproduced(3.00, 3.02, 0.01, 0.6, 3.0)  # 0.02 <= 3 * 0.01 * sqrt 2
    assert not integrity.reproduced(3.00, 3.05, 0.01, 0.6, 3.0)
    assert not integrity.reproduced(3.00, None, 0.01, 0.6, 3.0)  # the fresh run failed
    assert not integrity.reproduced(0.50, 0.50, 0.01, 0.6, 3.0)  # a deterministic cheat reproduces itself
    assert not integrity.reproduced(float("nan"), 3.0, 0.01, 0.6, 3.0)


OPTIMUM = {"DEPTH": "6", "WIDTH": "192", "LEARNING_RATE": "3e-3", "BATCH_SIZE": "32", "WARMUP": "50",
           "DECAY": "0.1", "DROPOUT": "0.1", "BETA2": "0.99"}  # simulated val_bpb 1.0
BETTER = {"LEARNING_RATE": "3e-3", "WIDTH": "256", "DEPTH": "6", "BATCH_SIZE": "32"}  # 1.1445 (baseline 1.1624)


def test_suspicious_results_wait_for_a_fresh_run(tmp_path, shared_ray):
    """Floor 1.10 and every improvement 'far beyond the noise' (thresholds 0): the optimum (1.0) is below
    the floor, so it is never believed: penalty, never accepted. BETTER is suspicious too, but its fresh run
    agrees: it becomes ok, earns its reward, and is accepted."""
    cfg = config_mod.from_dict({
        "target": "synthetic", "name": "integrity",
        "policy": {"kind": "scripted", "fmt": "catalog", "group_size": 2,
                   "completions": [json.dumps(OPTIMUM), json.dumps(BETTER)]},
        "workers": {"count": 2, "sandbox": "simulated", "budget_s": 0.2},
        "search": {"noise_runs": 2, "confirm": False},  # the guard re-runs suspicious results regardless
        "integrity": {"floor_bpb": 1.10, "max_gain_z": 0.0, "max_gain_frac": 0.0},
        "reward": {"suspicious": -2.5},
        "oracle": {"max_experiments": 4}})
    lines: list[str] = []
    reason, d = launch(cfg, runs=tmp_path / "runs", log=lines.append)
    db = sqlite3.connect(d / "ledger.sqlite")
    db.row_factory = sqlite3.Row
    rows = {r["id"]: r for r in db.execute("SELECT * FROM experiments WHERE kind!='baseline'")}
    cands = [r for r in rows.values() if r["kind"] == "candidate" and r["reused_from"] is None]
    opt = next(r for r in cands if "BETA2" in r["diff"])
    better = next(r for r in cands if "BETA2" not in r["diff"])
    confirms = {r["parent"]: r for r in rows.values() if r["kind"] == "confirm"}
    accepted = {r[0] for r in db.execute("SELECT exp_id FROM accepted")}

    assert opt["status"] == "suspicious" and opt["reward"] == -2.5, dict(opt)
    assert "below the floor" in opt["message"] and "not reproduced" in opt["message"]
    assert opt["id"] in confirms and confirms[opt["id"]]["status"] == "ok"  # the fresh run did run
    assert opt["id"] not in accepted

    assert better["status"] == "ok" and better["reward"] > 0, dict(better)
    assert better["message"].startswith("reproduced")
    assert better["id"] in confirms and better["id"] in accepted
    events = [json.loads(e[0]) for e in db.execute("SELECT data FROM events WHERE kind='suspicious'")]
    assert {e["exp"] for e in events} == {opt["id"], better["id"]}, lines
    assert any("NOT reproduced" in line for line in lines) and any("reproduced by" in line for line in lines)
    # the git branch holds the accepted edit only: the baseline, then BETTER's commit, never the optimum's
    git = ["git", "-C", str(d / "git")]
    log = subprocess.run(git + ["log", "--format=%s", "arrl/integrity"], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert len(log) == 2 and log[-1] == "baseline" and log[0].startswith(f"exp {better['id']}:"), log
    head = subprocess.run(git + ["show", "arrl/integrity:train.py"], capture_output=True, text=True,
                          check=True).stdout
    assert head == (d / "experiments" / f"{better['id']:06d}" / "train.py").read_text()


def test_integrity_settings_are_checked():
    with pytest.raises(config_mod.ConfigError, match=r"\[integrity\] reproduce_z: must be >= 0"):
        config_mod.from_dict({"integrity": {"reproduce_z": -1.0}})
    with pytest.raises(config_mod.ConfigError, match=r"\[integrity\] floor_bpb: must be a finite number"):
        config_mod.from_dict({"integrity": {"floor_bpb": float("nan")}})
