"""The sealed test split: every incumbent's runs are scored on it, and nothing that decides reads it."""

from __future__ import annotations

import ast
import sqlite3
from pathlib import Path

from arrl import config as config_mod
from arrl.launch import launch

SRC = Path(__file__).resolve().parents[2] / "src" / "arrl"
NAMES = ("test_bpb", "test_scores", "test_scored")


def test_every_incumbent_is_scored_on_the_test_split(tmp_path, shared_ray):
    cfg = config_mod.from_dict({
        "target": "synthetic", "name": "sealed",
        "policy": {"kind": "random", "fmt": "catalog", "group_size": 4},
        "workers": {"count": 2, "gpus_per_worker": 1.0, "sandbox": "simulated", "budget_s": 0.2},
        "search": {"noise_runs": 3}, "oracle": {"max_experiments": 30}})
    reason, d = launch(cfg, runs=tmp_path / "runs", log=lambda s: None)
    db = sqlite3.connect(d / "ledger.sqlite")
    first = db.execute("SELECT MIN(id) FROM experiments WHERE kind='baseline'").fetchone()[0]
    scores = {r[0]: r[1:] for r in db.execute("SELECT exp_id, incumbent_id, status, test_bpb FROM test_scores")}
    base = [r[0] for r in db.execute("SELECT id FROM experiments WHERE kind='baseline' AND status='ok'")]
    assert all(scores[b][0] == first and scores[b][1] == "ok" for b in base)
    accepted = [r[0] for r in db.execute("SELECT exp_id FROM accepted")]
    assert accepted, "the run accepted nothing to score"
    for a in accepted:
        runs = [a] + [r[0] for r in db.execute("SELECT id FROM experiments WHERE kind='confirm' AND parent=? AND "
                                               "status='ok'", (a,))]
        assert all(scores[r][0] == a and scores[r][1] == "ok" for r in runs)
    # only incumbents' runs are scored, each once
    assert set(scores) == set(base) | {r for a in accepted for r in [a] + [x[0] for x in db.execute(
        "SELECT id FROM experiments WHERE kind='confirm' AND parent=? AND status='ok'", (a,))]}
    # the simulated target does not overfit: test and val of each scored run agree within a few noise sigmas
    for exp, (_, _, test) in scores.items():
        val = db.execute("SELECT val_bpb FROM experiments WHERE id=?", (exp,)).fetchone()[0]
        assert abs(test - val) < 0.02


def _readers(path: Path) -> set[str]:
    """Functions of a module whose code names the test split's score or table."""
    tree = ast.parse(path.read_text())
    found = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            text = ast.get_source_segment(path.read_text(), fn) or ""
            if any(n in text for n in NAMES):
                found.add(fn.name)
    return found


def test_nothing_that_decides_a_reward_acceptance_or_abort_reads_the_test_split():
    deciders = ([SRC / "worker" / "abort.py"] + sorted((SRC / "driver").glob("*.py"))
                + sorted((SRC / "learner").glob("*.py")) + sorted((SRC / "policy").glob("*.py")))
    sealed = SRC / "driver" / "sealed.py"
    assert len(deciders) > 20 and sealed in deciders
    for path in deciders:
        if path != sealed:
            assert not _readers(path), path
    # the driver's sealed.py only queues the evaluations, hands them to workers and records what comes back
    assert set() < _readers(sealed) <= {"_queue_tests", "_submit_test", "_handle_test"}
    assert "test_scores" not in sealed.read_text().replace("`test_scores`", "")
