"""The driver end to end on a real local Ray with 4 fake GPUs, the tiny target and a scripted policy."""

from __future__ import annotations

import json
import math
import re
import sqlite3
import subprocess
import statistics

import pytest

from arrl import config as config_mod
from arrl.driver import noise as acceptance
from arrl.launch import launch
from arrl.ledger import export
from arrl.report import status as report

# every launch here is in-process: one Ray for all of them (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("shared_ray")


def block(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


START = "    run = progress.start()"
# One scripted completion per status this stage can produce, in the order the policy gives them.
SCRIPT = {
    "ok": block("LEARNING_RATE = 3e-3  # peak AdamW learning rate", "LEARNING_RATE = 2e-3  # peak AdamW learning rate"),
    "edit_failed": block("this line is not in train.py", "x = 1"),
    "rejected": block(START, "    import socket\n" + START),
    "crash": block(START, "    raise RuntimeError('scripted crash')"),
    "timeout": block("    while not run.over_budget():", "    while True:"),
    "nan": block("        loss = F.cross_entropy(model(x).view(-1, prof.vocab_size), y.reshape(-1))",
                 "        loss = F.cross_entropy(model(x).view(-1, prof.vocab_size), y.reshape(-1)) * float('nan')"),
    "invalid_metric": block("y = F.scaled_dot_product_attention(q, k, v, is_causal=True)",
                            "y = F.scaled_dot_product_attention(q, k, v, is_causal=False)"),
    "oom": block(START, "    hog = []\n    while True:\n        hog.append(b'x' * (64 << 20))\n" + START),
}


@pytest.fixture
def runs(tmp_path, shakespeare_dir, monkeypatch):
    monkeypatch.setenv("ARRL_DATA_HOME", str(shakespeare_dir.parent))
    return tmp_path / "runs"


def test_full_run_with_every_status(runs):
    cfg = config_mod.from_dict({
        "target": "tiny", "name": "every-status",
        "policy": {"kind": "scripted", "fmt": "search_replace", "group_size": 4,
                   "completions": list(SCRIPT.values()) + [SCRIPT["ok"]]},  # the last one is a duplicate
        "workers": {"count": 4, "gpus_per_worker": 1.0, "budget_s": 2.0, "grace_s": 45.0,
                    "threads": 1},
        # no acceptance: an accepted "ok" edit would make the queued proposals stale (dropped) and the
        # duplicate's SEARCH text miss, so whether every status shows up would depend on the noise draw
        "search": {"noise_runs": 2, "confirm": True, "margin_z": 1e6},
        # duplicates count: the script repeats itself, so past its first round (6 runs that train) only
        # duplicates come, plus re-runs of the timeout while its first run is still going, as many as the
        # timing allows; with count_duplicates the 9th experiment comes early in the second round every time
        "oracle": {"max_experiments": 9, "count_duplicates": True},
    })
    lines = []
    reason, d = launch(cfg, runs=runs, log=lines.append)
    assert reason.startswith("experiment budget reached"), lines
    db = sqlite3.connect(d / "ledger.sqlite")
    rows = db.execute("SELECT kind, status, reused_from, reward, state, worker FROM experiments ORDER BY id").fetchall()
    statuses = {r[1] for r in rows if r[0] == "candidate"}
    assert set(SCRIPT) <= statuses, (statuses, lines)
    assert all(r[4] == "done" for r in rows)
    assert sum(r[0] == "baseline" for r in rows) == 2
    # the repeated completion was answered from the ledger, not re-run
    assert any(r[2] is not None for r in rows), rows
    # every candidate has a reward; failures get their configured penalty
    assert all(r[3] is not None for r in rows if r[0] == "candidate")
    assert {r[3] for r in rows if r[1] in ("crash", "timeout", "oom", "nan", "invalid_metric", "edit_failed")} == {-1.0}
    # 4 workers were used (fake GPUs), and the proposals are in the ledger
    assert {r[5] for r in rows if r[5]} == {f"worker-{i}" for i in range(4)}, rows
    assert db.execute("SELECT COUNT(*) FROM proposals").fetchone()[0] >= 8
    # the git branch starts at the baseline and has one commit per acceptance
    log = subprocess.run(["git", "-C", str(d / "git"), "log", "--format=%s", "arrl/every-status"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    n_acc = db.execute("SELECT COUNT(*) FROM accepted").fetchone()[0]
    assert log[-1] == "baseline" and len(log) == 1 + n_acc
    text, finished = report.status_text(d)
    assert finished and "every-status" in text and re.search(r"by status: .*timeout \d", text)
    paths = export.export(d)
    tsv = (d / "exports" / "results.tsv").read_text().splitlines()
    assert tsv[0].split("\t") == ["commit", "val_bpb", "memory_gb", "status", "description"]
    ideas = [r for r in rows if r[0] == "candidate" and r[2] is None  # baselines in one row; reused ones, failed
             and r[1] not in export.NOT_RUN]                          # edits and refused ones did not train
    assert len(tsv) - 1 == 1 + len(ideas) and tsv[1].split("\t")[3] == "keep"
    import pyarrow.parquet as pq

    assert pq.read_table(d / "exports" / "experiments.parquet").num_rows == len(rows)
    assert sorted(p.name for p in paths) == sorted([f"{t}.parquet" for t in export.TABLES] + ["meta.parquet", "results.tsv"])
    cfg_saved = json.loads((d / "config.json").read_text())
    assert cfg_saved["workers"]["count"] == 4


@pytest.mark.parametrize("pool", [True, False])
def test_random_search_on_the_simulated_target(tmp_path, pool):
    """The random catalog policy on the synthetic target (simulated backend, 8 fake GPUs) finds improvements;
    the noise sigma it ends with is the pooled SD of every source that ran more than once (pool_noise), or the
    baselines' SD alone."""
    cfg = config_mod.from_dict({
        "target": "synthetic", "name": "random-synthetic",
        "policy": {"kind": "random", "fmt": "catalog", "group_size": 4},
        "workers": {"count": 8, "gpus_per_worker": 1.0, "sandbox": "simulated", "budget_s": 0.2},
        "search": {"noise_runs": 3, "min_sigma": 0.0, "pool_noise": pool}, "oracle": {"max_experiments": 48}})
    reason, d = launch(cfg, runs=tmp_path / "runs", log=lambda s: None)
    assert reason.startswith("experiment budget reached")
    db = sqlite3.connect(d / "ledger.sqlite")
    base = db.execute("SELECT AVG(val_bpb) FROM experiments WHERE kind='baseline'").fetchone()[0]
    acc = db.execute("SELECT val_bpb FROM accepted ORDER BY created").fetchall()
    assert acc and acc[-1][0] < base - 0.01  # several noise sigmas (0.002) better than the baseline
    vals = [r[0] for r in acc]
    assert vals == sorted(vals, reverse=True)  # each acceptance improves on the last
    iso = {json.loads(r[0])["isolation"] for r in db.execute("SELECT outcome FROM experiments WHERE outcome IS NOT NULL")}
    assert iso == {"simulated"}  # simulated numbers say so
    # the recorded noise, recomputed by hand from the ledger: runs of one source grouped by its normalised sha
    groups: dict = {}
    for kind, norm, v in db.execute("SELECT kind, norm_sha, val_bpb FROM experiments WHERE status='ok' AND "
                                    "reused_from IS NULL"):
        if pool or kind == "baseline":
            groups.setdefault(norm, []).append(v)
    repeated = [g for g in groups.values() if len(g) > 1]
    assert len(repeated) >= (1 + len(acc) if pool else 1)  # the baselines, and every accepted edit ran twice
    # robust: every |a - b| within a source; their median (the lower 30% point where one run takes part in half
    # of them: 3 baselines alone), over its value for unit normal noise
    diffs = sorted(abs(a - b) for g in repeated for i, a in enumerate(g) for b in g[i + 1:])
    if 2 * (max(len(g) for g in repeated) - 1) < len(diffs):
        stat = statistics.median(diffs)
    else:
        stat = diffs[math.ceil(0.3 * len(diffs)) - 1]
    dof = sum(len(g) - 1 for g in repeated)
    noise = json.loads(db.execute("SELECT value FROM meta WHERE key='noise'").fetchone()[0])
    assert noise["dof"] == dof and noise["runs"] == sum(len(g) for g in groups.values())
    assert dof == 2 or pool
    scale = acceptance.consistency(tuple(sorted(len(g) for g in repeated)))
    assert noise["sigma"] == pytest.approx(stat / scale, rel=1e-9)
    assert noise["estimator"] == "robust"


# DECAY 0.1 and DROPOUT 0.1 on the synthetic target: noiseless val_bpb 1.0617 against the baseline's 1.1624
REPEAT = '{"DECAY": "0.1", "DROPOUT": "0.1"}'


@pytest.mark.parametrize("k,count", [(0, True), (0, False), (4, False)])
def test_a_repeated_source_runs_again_until_its_runs_together_are_accepted(tmp_path, k, count):
    """sigma fixed at 0.01 and margin 9 sigma: one run of REPEAT (gain ~0.10) is not promising (needs 0.110), the
    mean of two is accepted (needs 0.090). With `rerun_repeats` the policy's repeat runs again and the two runs
    are accepted together; without it the repeat is answered from the ledger and nothing is accepted."""
    cfg = config_mod.from_dict({
        "target": "synthetic", "name": f"rerun-{k}-{count}",
        "policy": {"kind": "scripted", "fmt": "catalog", "group_size": 2, "completions": [REPEAT]},
        "workers": {"count": 1, "sandbox": "simulated", "budget_s": 0.1},
        "search": {"noise_runs": 2, "min_sigma": 0.01, "pool_noise": False, "margin_z": 9.0, "rerun_repeats": k},
        "oracle": {"max_experiments": 5, "max_failed_edits": 5, "count_duplicates": count}})
    lines: list[str] = []
    reason, d = launch(cfg, runs=tmp_path / "runs", log=lines.append)
    # without re-runs the repeats use up the budget where duplicates count, else the failed-edit bound stops
    # the run; once REPEAT is the incumbent, the edit changes nothing
    assert reason.startswith("experiment budget reached" if count else "the policy's last "), lines
    db = sqlite3.connect(d / "ledger.sqlite")
    db.row_factory = sqlite3.Row
    cands = db.execute("SELECT * FROM experiments WHERE kind='candidate' ORDER BY id").fetchall()
    ran = [r for r in cands if r["reused_from"] is None and r["status"] != "edit_failed"]
    acc = db.execute("SELECT * FROM accepted").fetchall()
    assert not db.execute("SELECT 1 FROM experiments WHERE kind='confirm'").fetchone()  # never promising alone
    if not k and count:
        # exactly the budget: duplicates answered from the ledger count, and the driver checks the budget
        # before each proposal it turns into an experiment (it once answered a whole group's duplicates)
        assert len(ran) == 1 and not acc and len(cands) == 5, lines
        assert "experiments run 5 / 5 (4 of them answered from the ledger)" in report.status_text(d)[0]
        return
    if not k:
        # the default: one run trained, then 5 duplicates in a row trained nothing and stopped the run
        assert reason == "the policy's last 5 edits all failed, were rejected or trained nothing", lines
        assert len(ran) == 1 and not acc and sum(r["reused_from"] == ran[0]["id"] for r in cands) >= 5, lines
        # arrl status counts what the budget counts: the one run that trained, and the duplicates beside it
        dups = sum(r["reused_from"] is not None for r in cands)
        assert f"experiments run 1 / 5 ({dups} more answered from the ledger)" in report.status_text(d)[0]
        return
    # the first repeat ran again (event `rerun`), and the two runs were accepted on their mean
    assert len(ran) == 2 and ran[0]["norm_sha"] == ran[1]["norm_sha"] and ran[0]["seed"] != ran[1]["seed"]
    rerun = [json.loads(e[0]) for e in db.execute("SELECT data FROM events WHERE kind='rerun'")]
    assert rerun == [{"exp": ran[1]["id"], "of": [ran[0]["id"]]}]
    assert len(acc) == 1 and acc[0]["exp_id"] == ran[1]["id"]
    assert acc[0]["val_bpb"] == pytest.approx((ran[0]["val_bpb"] + ran[1]["val_bpb"]) / 2, rel=1e-12)
    # then the incumbent already has REPEAT's values: the same edit fails to apply
    assert {r["status"] for r in cands[2:]} == {"edit_failed"} and len(cands) >= 7
    # a resumed driver derives the same incumbent, two runs and all, from the ledger
    lines2: list[str] = []
    launch(cfg, resume=cfg.name, runs=tmp_path / "runs", log=lines2.append)
    assert any(f"incumbent exp {ran[1]['id']} at {acc[0]['val_bpb']:.4f}" in line for line in lines2), lines2


def test_a_policy_whose_edits_all_fail_stops_the_run(runs):
    """No livelock: failed edits use no worker, so they are bounded by their own oracle rule."""
    cfg = config_mod.from_dict({
        "target": "tiny", "name": "all-fail",
        "policy": {"kind": "scripted", "fmt": "search_replace", "completions": [SCRIPT["edit_failed"]]},
        "workers": {"count": 1, "budget_s": 1.0, "grace_s": 30.0, "threads": 1},
        "search": {"noise_runs": 1}, "oracle": {"max_experiments": 5, "max_failed_edits": 20}})
    reason, d = launch(cfg, runs=runs, log=lambda s: None)
    assert reason == "the policy's last 20 edits all failed, were rejected or trained nothing"
    db = sqlite3.connect(d / "ledger.sqlite")
    assert db.execute("SELECT COUNT(*) FROM experiments WHERE status='edit_failed'").fetchone()[0] >= 20


def test_worker_process_imports_no_torch():
    """Workers only launch sandboxes: importing and running one must not pull in torch (1 s, 300 MB)."""
    import sys

    code = ("import sys, arrl.worker.worker, arrl.worker.sandbox.process, arrl.worker.sandbox.docker\n"
            "import arrl.worker.sandbox.simulated\n"
            "from env import manifest, progress\n"
            "w = arrl.worker.worker.ExperimentWorker('w', 'shakespeare', {'budget_s': 0.01}, backend='simulated')\n"
            "w.run(1, 'x = 1\\n', 0)\n"
            "print(sorted(m for m in ('torch', 'transformers', 'vllm', 'peft') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_early_abort_stops_a_candidate_that_cannot_beat_the_incumbent(runs):
    """[search] early_abort: a candidate whose learning rate cannot train is stopped early against the
    baseline's final training loss, recorded `aborted` with the configured penalty."""
    cfg = config_mod.from_dict({
        "target": "tiny", "name": "abort",
        "policy": {"kind": "scripted", "fmt": "search_replace", "group_size": 1, "completions": [
            block("LEARNING_RATE = 3e-3  # peak AdamW learning rate", "LEARNING_RATE = 1e-9  # peak AdamW learning rate")]},
        "workers": {"count": 1, "gpus_per_worker": 1.0, "budget_s": 6.0, "grace_s": 45.0, "threads": 1},
        "search": {"noise_runs": 1, "early_abort": True},
        "oracle": {"max_experiments": 1},
    })
    reason, d = launch(cfg, runs=runs, log=lambda s: None)
    assert reason.startswith("experiment budget reached")
    db = sqlite3.connect(d / "ledger.sqlite")
    rows = db.execute("SELECT kind, status, reward, message, outcome FROM experiments ORDER BY id").fetchall()
    assert [(r[0], r[1]) for r in rows] == [("baseline", "ok"), ("candidate", "aborted")], rows
    assert rows[1][2] == cfg.reward.aborted and "self-evaluation" in rows[1][3]
    assert json.loads(rows[1][4])["curve"][-1][0] < 6.0  # it did not train its whole budget


def test_early_abort_on_the_simulated_target_stops_the_run_and_keeps_what_is_accepted(tmp_path):
    """[search] early_abort with the simulated backend (the research benchmark's loop methods): a candidate
    whose curve trails the incumbent's is stopped at a checkpoint, recorded `aborted` with fewer steps and
    seconds than its budget, and rewarded `[reward] aborted`; baselines and confirmations run to the end."""
    cfg = config_mod.from_dict({
        "target": "synthetic", "name": "abort-simulated",
        "policy": {"kind": "random", "fmt": "catalog", "group_size": 4},
        "workers": {"count": 1, "gpus_per_worker": 1.0, "sandbox": "simulated", "budget_s": 0.5},
        "search": {"noise_runs": 2, "early_abort": True}, "oracle": {"max_experiments": 16}})
    reason, d = launch(cfg, runs=tmp_path / "runs", log=lambda s: None)
    assert reason.startswith("experiment budget reached")
    db = sqlite3.connect(d / "ledger.sqlite")
    rows = db.execute("SELECT kind, status, reward, message, outcome, val_bpb FROM experiments "
                      "WHERE reused_from IS NULL AND outcome IS NOT NULL").fetchall()
    aborted = [r for r in rows if r[1] == "aborted"]
    assert aborted and {r[0] for r in aborted} == {"candidate"}, [(r[0], r[1]) for r in rows]
    for kind, status, reward, message, outcome, val_bpb in aborted:
        out = json.loads(outcome)
        assert reward == cfg.reward.aborted and "self-evaluation" in message and val_bpb is None
        assert out["steps"] < 100 and out["timings"]["train_s"] < 0.5  # stopped before its budget's end
    full = [json.loads(r[4]) for r in rows if r[0] in ("baseline", "confirm")]
    assert full and all(o["status"] == "ok" and o["steps"] == 100 for o in full)
