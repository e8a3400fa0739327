"""The distance between programs behind novelty before compute (arrl.driver.novelty)."""

from __future__ import annotations

import pytest

from arrl import paths, target
from arrl.driver.novelty import Index, positions

SYN = target.load("synthetic", paths.targets_dir())


def _set(source: str, **knobs) -> str:
    lines = source.splitlines()
    for name, value in knobs.items():
        lines = [f"{name} = {value}" if ln.startswith(f"{name} = ") else ln for ln in lines]
    return "\n".join(lines) + "\n"


def test_catalog_settings_are_compared_knob_by_knob():
    src = SYN.source()
    idx = Index(SYN.catalog)
    assert idx.nearest(src) is None  # nothing ran yet
    idx.add(1, src)
    assert idx.nearest(src).distance == 0.0
    one_step = idx.nearest(_set(src, DEPTH="6"))  # 4 -> 6: one step of a knob with 7 values
    assert (one_step.kind, one_step.exp_id) == ("catalog", 1) and one_step.distance == pytest.approx(1 / 6)
    far = idx.nearest(_set(src, DEPTH="12", BATCH_SIZE="128"))  # 3 of 6 steps, and 3 of 5
    assert far.distance == pytest.approx(3 / 6 + 3 / 5)
    idx.add(2, _set(src, DEPTH="12", BATCH_SIZE="128"))
    near = idx.nearest(_set(src, DEPTH="12", BATCH_SIZE="64"))
    assert (near.exp_id, near.distance) == (2, pytest.approx(1 / 5))
    # the same value written another way is the same setting
    assert positions(_set(src, LEARNING_RATE="0.001"), SYN.catalog) == positions(src, SYN.catalog)


def test_code_changes_are_compared_as_sources():
    src = SYN.source()
    idx = Index(SYN.catalog)
    idx.add(1, src)
    edited = src.replace('if __name__ == "__main__":', 'print("hello")\nif __name__ == "__main__":')
    near = idx.nearest(edited)
    assert near.kind == "source" and 0 < near.distance < 0.2  # one added line among a dozen
    other = "import math\n\n\ndef f(x):\n    return math.sqrt(x)\n"
    assert idx.nearest(other).distance > 0.9
    assert Index().nearest("x = 1\n") is None
    free = Index()
    free.add(7, "x = 1\ny = 2\n")
    assert free.nearest("x = 1\n# a comment only\ny = 2\n").distance == 0.0  # formatting is not a change


@pytest.mark.parametrize("threshold", [0.0, 0.2])
def test_a_near_duplicate_is_answered_without_a_worker(tmp_path, threshold, shared_ray):
    """With `[search] novelty_catalog` = 0.2, an edit one knob step (0.167) from the start is answered from the
    ledger, status `near_duplicate` with its penalty, and never reaches a worker; an edit far from every program
    runs. At the default 0, both run."""
    import json
    import sqlite3

    from arrl import config as config_mod
    from arrl.launch import launch

    near, far = json.dumps({"LEARNING_RATE": "2e-3"}), json.dumps({"DEPTH": "12", "WIDTH": "384"})
    cfg = config_mod.from_dict({
        "target": "synthetic", "name": f"near-{threshold}",
        "policy": {"kind": "scripted", "fmt": "catalog", "group_size": 2, "completions": [near, far]},
        "workers": {"count": 1, "sandbox": "simulated", "budget_s": 0.1},
        "search": {"noise_runs": 2, "novelty_catalog": threshold},
        "reward": {"near_duplicate": -0.7},
        "oracle": {"max_experiments": 1, "max_failed_edits": 3}})
    reason, d = launch(cfg, runs=tmp_path / "runs", log=lambda *_: None)
    db = sqlite3.connect(d / "ledger.sqlite")
    db.row_factory = sqlite3.Row
    first = db.execute("SELECT * FROM experiments WHERE kind='candidate' ORDER BY id").fetchone()
    second = db.execute("SELECT * FROM experiments WHERE kind='candidate' ORDER BY id LIMIT 1 OFFSET 1").fetchone()
    assert first["summary"].startswith('{"LEARNING_RATE"')
    if threshold:
        assert first["status"] == "near_duplicate" and first["reward"] == -0.7
        assert first["worker"] is None and first["attempts"] == 0 and first["val_bpb"] is None
        assert "catalog distance 0.167 to exp 1" in first["message"]
        ev = json.loads(db.execute("SELECT data FROM events WHERE kind='near_duplicate'").fetchone()[0])
        assert ev["exp"] == first["id"] and ev["by"] == "catalog" and ev["of"] == 1
        assert second is not None and second["status"] == "ok" and second["worker"] is not None  # far: it ran
    else:
        assert first["status"] == "ok" and first["worker"] is not None
        assert not db.execute("SELECT 1 FROM events WHERE kind='near_duplicate'").fetchone()
