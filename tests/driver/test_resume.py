"""Faults in the loop: the driver killed with SIGKILL and resumed; a worker actor killed mid-experiment."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
import ray

from arrl import config as config_mod
from arrl.launch import launch
from tiers import tier

# Catalog edits apply to any incumbent (a SEARCH/REPLACE of the original line would stop
# applying once an edit of that line is accepted).
CONFIG = {
    "target": "tiny",
    "policy": {"kind": "scripted", "fmt": "catalog", "group_size": 2,
               "completions": [json.dumps({"LEARNING_RATE": v}) for v in ("1e-2", "2e-3", "5e-3", "1e-3", "3e-4")]
               + [json.dumps({"N_LAYER": "2"}), json.dumps({"BATCH_SIZE": "8"})]},
    "workers": {"count": 2, "gpus_per_worker": 1.0, "budget_s": 1.0, "grace_s": 30.0, "threads": 1},
    "search": {"noise_runs": 2, "min_sigma": 0.001},
    "oracle": {"max_experiments": 5},
}


def check_ledger(d, cap: int):
    db = sqlite3.connect(d / "ledger.sqlite")
    meta = dict(db.execute("SELECT key, value FROM meta"))
    assert json.loads(meta["status"]) == "finished"
    assert json.loads(meta["stop_reason"]).startswith("experiment budget reached")
    assert db.execute("SELECT COUNT(*) FROM experiments WHERE state!='done'").fetchone()[0] == 0
    # each proposal ran at most once as a candidate, each candidate was confirmed at most once
    assert db.execute("SELECT COUNT(*) FROM (SELECT proposal_id FROM experiments WHERE kind='candidate' "
                      "GROUP BY proposal_id HAVING COUNT(*) > 1)").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM (SELECT parent FROM experiments WHERE kind='confirm' "
                      "GROUP BY parent HAVING COUNT(*) > 1)").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM experiments WHERE kind='baseline'").fetchone()[0] == 2
    ran = db.execute("SELECT COUNT(*) FROM experiments WHERE kind!='baseline'").fetchone()[0]
    assert cap <= ran <= cap + 2  # the cap, plus at most the confirmation runs it triggered
    # the git branch holds exactly the accepted edits, once each
    acc = [r[0] for r in db.execute("SELECT exp_id FROM accepted ORDER BY created")]
    log = subprocess.run(["git", "-C", str(d / "git"), "log", "--format=%s", f"arrl/{d.name}"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert log[-1] == "baseline"
    assert [int(s.split(":")[0].split()[1]) for s in reversed(log[:-1])] == acc
    return db


@pytest.fixture
def env(tmp_path, shakespeare_dir):
    e = dict(os.environ, ARRL_DATA_HOME=str(shakespeare_dir.parent), ARRL_RUNS_DIR=str(tmp_path / "runs"),
             ARRL_SCRATCH_DIR=str(tmp_path / "scratch"), RAY_ADDRESS="")
    return e


def test_driver_killed_at_random_moments_resumes_to_a_consistent_ledger(tmp_path, env):
    rng = random.Random(7)
    cfg_file = tmp_path / "launch.toml"
    trials = tier(1, 3)  # CI tier: one kill; full tier: three
    for trial in range(trials):
        name = f"kill-{trial}"
        cfg_file.write_text(config_mod.to_toml(config_mod.from_dict({**CONFIG, "name": name})))
        cmd = [sys.executable, "-m", "arrl", "launch", str(cfg_file)]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        time.sleep(rng.uniform(8.0, 25.0))
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
        proc.wait()
        d = tmp_path / "runs" / name
        db = sqlite3.connect(d / "ledger.sqlite")
        status = db.execute("SELECT value FROM meta WHERE key='status'").fetchone()
        db.close()
        assert status is None or json.loads(status[0]) != "finished"  # it really was cut short
        out = subprocess.run([sys.executable, "-m", "arrl", "launch", "--resume", name], env=env,
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        check_ledger(d, CONFIG["oracle"]["max_experiments"])
        # the killed workers' scratch folders (the models they kept) were swept by the resumed run's workers,
        # and those closed their own as the run ended
        assert sorted(p.name for p in (tmp_path / "scratch").glob("arrl-*")) == []


def test_a_driver_stopped_while_adding_an_experiment_leaves_no_row_without_its_script(tmp_path, env, monkeypatch,
                                                                                         shared_ray):
    """The window a random kill rarely hits (the chaos test did): between an experiment's row and its
    train.py. The row and the script are written in one transaction, so the stopped driver leaves either
    both or neither, and the resume runs to a consistent ledger."""
    from arrl.ledger.store import Store

    monkeypatch.setenv("ARRL_DATA_HOME", env["ARRL_DATA_HOME"])
    real, calls = Store.write_source, []

    def stopped_on_the_third(self, exp_id, source, diff=None):
        calls.append(exp_id)
        if len(calls) == 3:  # the first candidate, after the two baselines
            raise KeyboardInterrupt("stopped while adding an experiment")
        real(self, exp_id, source, diff)

    monkeypatch.setattr(Store, "write_source", stopped_on_the_third)
    runs = tmp_path / "runs"
    cfg = {**CONFIG, "name": "torn", "target": "synthetic", "oracle": {"max_experiments": 2},
           "workers": {"count": 2, "sandbox": "simulated", "budget_s": 1.0}}
    cfg["policy"] = {**CONFIG["policy"], "completions": [json.dumps({"LEARNING_RATE": v}) for v in ("1e-2", "2e-3")]}
    with pytest.raises(KeyboardInterrupt):
        launch(config_mod.from_dict(cfg), runs=runs, log=lambda *_: None)
    d = runs / "torn"
    db = sqlite3.connect(d / "ledger.sqlite")
    ids = [r[0] for r in db.execute("SELECT id FROM experiments")]
    db.close()
    assert calls[2] not in ids and ids, (calls, ids)  # the row of the stopped write was never committed
    assert all((d / "experiments" / f"{i:06d}" / "train.py").is_file() for i in ids)
    monkeypatch.setattr(Store, "write_source", real)
    reason, _ = launch(config_mod.from_dict(cfg), resume="torn", runs=runs, log=lambda *_: None)
    assert reason.startswith("experiment budget reached")
    check_ledger(d, 2)


@pytest.mark.parametrize("backend", ["process", "docker"])
def test_a_killed_worker_actor_has_its_experiment_rerun(tmp_path, shakespeare_dir, monkeypatch, backend, request,
                                                        shared_ray):
    monkeypatch.setenv("ARRL_DATA_HOME", str(shakespeare_dir.parent))
    if backend == "docker":
        request.getfixturevalue("docker_host")
    cfg = config_mod.from_dict({**CONFIG, "name": "worker-dies", "oracle": {"max_experiments": 3},
                                "workers": {**CONFIG["workers"], "sandbox": backend}})
    killed = {}

    def killer():
        while "done" not in killed:
            time.sleep(0.5)
            try:
                w = ray.get_actor("arrl/worker-dies/worker-0")
                st = ray.get(w.status.remote(), timeout=5)
            except Exception:  # noqa: BLE001 - not up yet
                continue
            if st["current"] and st["current"]["exp"] > 2:  # a candidate, after the baselines
                killed["exp"] = st["current"]["exp"]
                ray.kill(w)
                return

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    lines = []
    reason, d = launch(cfg, runs=tmp_path / "runs", log=lines.append)
    killed["done"] = True
    assert "exp" in killed, lines
    db = check_ledger(d, 3)
    attempts, worker = db.execute("SELECT attempts, worker FROM experiments WHERE id=?", (killed["exp"],)).fetchone()
    # the killed attempt and the one that finished; a re-run the contention check asked for (the new worker
    # actor starts up on the cores of the other worker's run) is an attempt too, and leaves its event
    contended = db.execute("SELECT COUNT(*) FROM events WHERE kind='contended' AND json_extract(data, '$.exp')=?",
                           (killed["exp"],)).fetchone()[0]
    assert attempts - contended == 2, lines
    events = [json.loads(r[0]) for r in db.execute("SELECT data FROM events WHERE kind='worker_died'")]
    assert [e["exp"] for e in events] == [killed["exp"]]
    if backend == "docker":
        from arrl.worker.sandbox.engine import client

        left = client().containers.list(all=True, filters={"label": ["arrl.run=worker-dies"]})
        assert not left, [c.name for c in left]  # not even the killed worker's container
