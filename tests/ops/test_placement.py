"""Placement: the plan for a machine's cores, its errors, and the cores as seen from inside the sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from arrl.ops import cores
from arrl.ops import placement
from arrl.ops.placement import PlacementError, plan
from arrl.worker.sandbox.process import ProcessSandbox
from arrl.worker.sandbox.config import SandboxConfig

ROOT = Path(__file__).resolve().parents[2]


def test_core_lists_parse_and_print():
    assert cores.parse("0-2,5") == (0, 1, 2, 5) and cores.parse("") == ()
    assert cores.fmt((5, 0, 1, 2)) == "0-2,5" and cores.fmt(()) == ""
    for bad in ("x", "3-1", "-1"):
        with pytest.raises(cores.CoreError):
            cores.parse(bad)


def test_the_two_core_default_schedules_policy_and_learner_between_runs():
    p = plan("auto", 1, False, True, have=(0, 1))
    assert p.mode == "between_runs" and p.between_runs
    assert p.worker_cores == ("0-1",) and p.threads(0) == 2
    assert "between training runs" in p.describe()


def test_enough_cores_reserve_one_for_the_policy_and_learner():
    p = plan("auto", 1, False, True, have=(0, 1, 2, 3))
    assert (p.mode, p.worker_cores, p.policy_cores, p.learner_cores) == ("reserved", ("1-3",), "0", "0")
    g = plan("auto", 8, True, True, have=tuple(range(16)))  # GPU workers: reserved, a core each
    assert g.mode == "reserved" and len(set(g.worker_cores)) == 8
    assert not set(cores.parse(g.policy_cores)) & {c for w in g.worker_cores for c in cores.parse(w)}
    two = plan("auto", 2, False, True, have=tuple(range(8)))
    a, b = (set(cores.parse(c)) for c in two.worker_cores)
    assert not a & b and not (a | b) & set(cores.parse(two.policy_cores))  # nothing shared


def test_no_local_policy_gives_every_core_to_the_workers():
    p = plan("auto", 2, False, False, have=(0, 1))
    assert p.worker_cores == ("0", "1") and not p.between_runs


def test_more_workers_than_cores_falls_back_to_off_with_a_warning():
    p = plan("auto", 4, False, True, have=(0, 1))
    assert p.mode == "off" and p.worker_cores == ("",) * 4 and "warning" in p.describe()


@pytest.mark.parametrize("kw,setting", [
    ({"mode": "reserved", "workers": 2}, "[placement] reserve_cores"),
    ({"mode": "between_runs", "workers": 3}, "[workers] count"),
    ({"mode": "auto", "workers": 1, "cores": "0-5"}, "[placement] cores"),
    ({"mode": "auto", "workers": 1, "cores": "x"}, "[placement] cores"),
    ({"mode": "auto", "workers": 1, "reserve_cores": 2}, "[placement] reserve_cores"),
    ({"mode": "between_runs", "workers": 1, "reserve_cores": 1, "have": (0, 1, 2, 3)}, "[placement] reserve_cores"),
])
def test_a_placement_that_cannot_be_met_names_its_setting(kw, setting):
    args = {"gpu_workers": False, "local_parts": True, "have": (0, 1), **kw}
    with pytest.raises(PlacementError) as e:
        plan(**args)
    assert str(e.value).startswith(setting) and "\n" not in str(e.value)


def test_launch_refuses_a_placement_it_cannot_meet_in_one_line(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[placement]\nmode = "reserved"\nreserve_cores = 64\n')
    r = subprocess.run([sys.executable, "-m", "arrl", "launch", str(cfg), "--runs-dir", str(tmp_path / "runs")],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "[placement] reserve_cores" in r.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # nothing started


AFFINITY = """
import os
print("ALLOWED", sorted(os.sched_getaffinity(0)), flush=True)
try:
    os.sched_setaffinity(0, set(range(os.cpu_count())))
except OSError:
    pass
print("AFTER", sorted(os.sched_getaffinity(0)), flush=True)
raise SystemExit(3)
"""


@pytest.mark.skipif(len(cores.available()) < 2, reason="needs two cores to pin a run to one of them")
def test_the_sandbox_holds_a_run_to_its_cores(shakespeare_dir, tmp_path):
    box = ProcessSandbox(ROOT / "env", shakespeare_dir, SandboxConfig(budget_s=5, grace_s=10, cores="1", threads=1))
    made = box.coreset.path
    try:
        out = box.run(AFFINITY, tmp_path / "run")
    finally:
        box.close()
    log = (tmp_path / "run" / "train.log").read_text()
    assert "ALLOWED [1]" in log and out.cores == "1"
    if box.pinning == "cpuset":  # a wall: the code under test cannot widen it
        assert "AFTER [1]" in log
        assert made is not None and not made.exists()  # its cgroup is gone once the sandbox is closed
    assert out.cpu_s is not None and out.foreign_share is not None


@pytest.mark.skipif(len(cores.available()) < 2 or not cores.cpuset_usable(), reason="needs root, cpuset, 2 cores")
def test_two_workers_sandboxes_keep_their_own_cores(shakespeare_dir, tmp_path):
    """Each sandbox's cgroup lives as long as its owner: making a second one sweeps only dead owners' cgroups."""
    a = ProcessSandbox(ROOT / "env", shakespeare_dir, SandboxConfig(budget_s=5, grace_s=10, cores="0", threads=1))
    b = ProcessSandbox(ROOT / "env", shakespeare_dir, SandboxConfig(budget_s=5, grace_s=10, cores="1", threads=1))
    try:
        for box, name, want in ((a, "a", "[0]"), (b, "b", "[1]"), (a, "a2", "[0]")):
            box.run(AFFINITY, tmp_path / name)
            assert f"ALLOWED {want}" in (tmp_path / name / "train.log").read_text()
    finally:
        a.close()
        b.close()


NICE = """
import os
print("NICE", os.nice(0), flush=True)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="raising a process's priority back needs root")
def test_a_run_started_from_a_nice_ray_worker_trains_at_nice_0(shakespeare_dir, tmp_path):
    """Ray starts its workers at nice 15; a sandbox they start must not inherit it, or every nice-0
    process of the node (raylet, the dashboard, the policy server) would take the run's cores first."""
    code = (f"import os; os.nice(15); from pathlib import Path; from arrl.worker.sandbox.process import ProcessSandbox, SandboxConfig; "
            f"box = ProcessSandbox(Path({str(ROOT / 'env')!r}), Path({str(shakespeare_dir)!r}), "
            f"SandboxConfig(budget_s=5, grace_s=10, threads=1)); box.run({NICE!r}, Path({str(tmp_path / 'run')!r})); "
            f"box.close(); print('PARENT', os.nice(0))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "PARENT 15" in r.stdout, r.stderr[-2000:]
    assert "NICE 0" in (tmp_path / "run" / "train.log").read_text()


def test_the_plan_is_recorded_as_json():
    p = plan("auto", 1, False, True, have=(0, 1))
    assert json.loads(json.dumps(p.to_dict()))["worker_cores"] == ["0-1"]
    assert placement.MODES[0] == "auto"
