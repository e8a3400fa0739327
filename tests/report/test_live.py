"""`arrl status --watch` in a real pseudo-terminal (tmux), read from the screen: workers with their experiment,
elapsed time against the budget and last loss, the best val_bpb, recent outcomes, the learner; Ctrl-C quits
cleanly. Off a terminal it prints plain lines. `arrl report RUN1 RUN2` draws runs on the same axes."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest

from arrl import config as config_mod
from arrl.ledger.reader import open_read_only
from arrl.report import compare
from arrl.report.figures import png_metadata

RUN = {"target": "synthetic",
       "policy": {"kind": "random", "fmt": "catalog", "group_size": 2},
       "workers": {"count": 2, "gpus_per_worker": 1.0, "sandbox": "simulated", "budget_s": 6.0},
       "search": {"noise_runs": 2, "min_sigma": 0.001},
       "oracle": {"max_experiments": 8}}


def start_run(tmp_path, name: str, target: str = "synthetic", **over) -> subprocess.Popen:
    cfg = json.loads(json.dumps(RUN))
    cfg["name"], cfg["target"] = name, target
    for k, v in over.items():
        cfg[k].update(v)
    f = tmp_path / f"{name}.toml"
    f.write_text(config_mod.to_toml(config_mod.from_dict(cfg)))
    env = dict(os.environ, ARRL_RUNS_DIR=str(tmp_path / "runs"), RAY_ADDRESS="")
    return subprocess.Popen([sys.executable, "-m", "arrl", "launch", str(f)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def screen(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout


def wait_for(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_the_live_view_in_a_terminal_and_as_plain_lines(tmp_path):
    proc = start_run(tmp_path, "watched")
    d = tmp_path / "runs" / "watched"
    session = f"arrl-live-{os.getpid()}"
    cmd = (f"ARRL_RUNS_DIR={shlex.quote(str(tmp_path / 'runs'))} {shlex.quote(sys.executable)} -m arrl status "
           f"watched --watch; echo EXIT=$?; sleep 60")
    try:
        wait_for(lambda: (d / "live.json").exists(), 120, "the driver's live file")
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "150", "-y", "45", cmd], check=True)
        # a frame with a worker mid-experiment: its experiment, elapsed against the 6 s budget, a step and a loss
        text = wait_for(lambda: (lambda t: t if re.search(r"worker-\d.*exp \d+.*#* +\d+ / 6 s.* \d+ .* \d\.\d{4} ", t)
                                 else None)(screen(session)), 90, "a busy worker on the screen")
        assert "arrl watched: running" in text
        assert "best val_bpb:" in text and "recent outcomes" in text
        assert "policy: adapter v0" in text and "learner: off" in text
        first = text
        # it redraws in place: a later frame differs, and the title is on the screen once
        later = wait_for(lambda: (lambda t: t if t != first else None)(screen(session)), 30, "a redraw")
        assert later.count("arrl watched:") == 1
        subprocess.run(["tmux", "send-keys", "-t", session, "C-c"], check=True)
        gone = wait_for(lambda: (lambda t: t if "EXIT=" in t else None)(screen(session)), 20, "the view to quit")
        assert "EXIT=0" in gone and "stopped watching; the run goes on" in gone
        assert "Traceback" not in gone
        # off a terminal: plain lines, one per finished experiment, until the run finishes
        out = subprocess.run([sys.executable, "-m", "arrl", "status", "watched", "--watch"], capture_output=True,
                             text=True, timeout=300, env=dict(os.environ, ARRL_RUNS_DIR=str(tmp_path / "runs")))
        assert out.returncode == 0, out.stderr
        assert "\x1b[" not in out.stdout  # no terminal control sequences
        assert re.search(r"^exp \d+ (candidate|confirm|baseline) ", out.stdout, re.M), out.stdout[-2000:]
        assert out.stdout.rstrip().splitlines()[-1].startswith("  accepted") or "by status:" in out.stdout
        assert "run watched: finished" in out.stdout
        assert proc.wait(timeout=120) == 0
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        if proc.poll() is None:
            os.killpg(proc.pid, 9)


def test_report_draws_runs_on_the_same_axes(tmp_path):
    for name, n in (("first", 8), ("second", 6)):
        p = start_run(tmp_path, name, workers={"budget_s": 0.1, "count": 1}, oracle={"max_experiments": n})
        assert p.wait(timeout=300) == 0
    env = dict(os.environ, ARRL_RUNS_DIR=str(tmp_path / "runs"))
    out = subprocess.run([sys.executable, "-m", "arrl", "report", "first", "second", "--chain"], capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "runs" / "compare" / "first+second"
    meta = png_metadata(folder / "compare.png")
    assert meta["runs"] == ["first", "second"] and meta["chained"]
    first = compare.series(tmp_path / "runs" / "first")
    second = compare.series(tmp_path / "runs" / "second")
    with open_read_only(tmp_path / "runs" / "first") as r:
        trained = sum(1 for _, _, _, t in r.finished_in_order() if t)
        best = min([a[1] for a in r.accepted_times()] or [first[0][2]])
    assert first[-1][0] == trained and first[-1][2] == pytest.approx(best)
    # chained: the second run's points continue where the first ended, on both axes
    chained = meta["series"]["second"]
    assert chained[0][0] == first[-1][0] + second[0][0]
    assert chained[0][1] == pytest.approx(first[-1][1] + second[0][1])
    assert [round(v, 9) for *_, v in chained] == [round(v, 9) for *_, v in second]
    rows = (folder / "compare.tsv").read_text().splitlines()
    assert rows[0].split("\t")[:3] == ["run", "runs trained", "training s"] and len(rows) == 3
    assert "first" in out.stdout and "second" in out.stdout
    # a run that is not there, and a run on another target, are refused in one line
    bad = subprocess.run([sys.executable, "-m", "arrl", "report", "first", "nope"], capture_output=True, text=True,
                         timeout=60, env=env)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "nope" in bad.stderr
    p = start_run(tmp_path, "basins", target="synthetic-basins", workers={"budget_s": 0.1, "count": 1},
                  oracle={"max_experiments": 2})
    assert p.wait(timeout=300) == 0
    bad = subprocess.run([sys.executable, "-m", "arrl", "report", "first", "basins"], capture_output=True, text=True,
                         timeout=60, env=env)
    assert bad.returncode == 2 and "different targets (synthetic, synthetic-basins)" in bad.stderr
