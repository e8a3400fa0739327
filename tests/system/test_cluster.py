"""arrl against a real Ray head started with `ray start --head` (fake GPUs), as on a cluster.

- `launch --address auto` from a driver connected to the head: the actors are named
  arrl/<run>/..., their reprs and task names say what they do, and the arrl metrics on the
  node's Prometheus endpoint carry the ledger's values;
- `arrl launch --address ray://HOST:PORT` (Ray Client) runs a whole run;
- `arrl launch --submit` (Ray Jobs API) returns at once with a job id; the job runs the loop.

While the head is up, a bare `ray.init()` on this machine connects to it, so everything
here lives in one module that stops the head at its end.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import ray

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

CONFIG = """
target = "synthetic"
[policy]
kind = "random"
fmt = "catalog"
group_size = 4
[workers]
count = 2
gpus_per_worker = 1.0
sandbox = "simulated"
budget_s = {budget}
[search]
noise_runs = 2
[oracle]
max_experiments = {n}
"""


def free_ports(n: int) -> list[int]:
    """n distinct free ports (held open together while they are picked)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    ports = dict(zip(("gcs", "dashboard", "client", "metrics"), free_ports(4)))
    # as a user who ran `.venv/bin/ray start --head` without activating the venv: it is not on PATH
    path = ":".join(p for p in os.environ["PATH"].split(":") if p and Path(p).resolve() != BIN.resolve())
    env = {**os.environ, "PATH": path, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("VIRTUAL_ENV", None)
    env.pop("RAY_ADDRESS", None)
    subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)
    cmd = [str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(ports["gcs"]),
           "--num-cpus", "6", "--num-gpus", "4", "--dashboard-host", "127.0.0.1",
           "--dashboard-port", str(ports["dashboard"]), "--ray-client-server-port", str(ports["client"]),
           "--metrics-export-port", str(ports["metrics"]), "--disable-usage-stats"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    try:
        yield {**ports, "env": env, "address": f"127.0.0.1:{ports['gcs']}"}
    finally:
        if ray.is_initialized():
            ray.shutdown()
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)


def scrape(port: int) -> dict:
    """{(metric name, frozenset of labels that matter): value} for every ray_arrl_* sample."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r'^(ray_arrl_\w+)\{(.*)\} (\S+)$', line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        keep = frozenset((k, v) for k, v in labels.items() if k in ("run", "status", "bin", "worker"))
        out[(m.group(1), keep)] = float(m.group(3))
    return out


def write_config(tmp_path: Path, budget: float, n: int) -> Path:
    f = tmp_path / "launch.toml"
    f.write_text(CONFIG.format(budget=budget, n=n))
    return f


def test_dashboard_names_reprs_and_metrics(head, tmp_path):
    from ray.util.state import list_actors, list_tasks

    from arrl import config as config_mod
    from arrl.launch import launch

    ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    cfg = config_mod.load(write_config(tmp_path, budget=2.0, n=14))  # ~20 s: actors report metrics every 10 s
    cfg.name = "dash"
    result = {}
    t = threading.Thread(target=lambda: result.update(zip(("reason", "dir"), launch(
        cfg, address="auto", runs=tmp_path / "runs", log=lambda s: None))))
    t.start()
    seen_actors, seen_tasks, busy, live = {}, set(), {}, set()
    t0 = time.time()
    while t.is_alive() and time.time() - t0 < 180:
        for a in list_actors(filters=[("state", "=", "ALIVE")], detail=True):
            if (a.name or "").startswith("arrl/dash/"):
                seen_actors[a.name] = a.repr_name
                try:  # the live repr, asked while the worker may be training (2 concurrency slots)
                    live.add(ray.get(ray.get_actor(a.name).__ray_call__.remote(lambda self: repr(self)), timeout=5))
                except (ValueError, ray.exceptions.RayError):
                    pass  # gone at the end of the run
        for task in list_tasks(filters=[("state", "=", "RUNNING")], detail=True):
            if (task.name or "").startswith("exp "):
                seen_tasks.add(task.name)
        busy.update({k: v for k, v in scrape(head["metrics"]).items() if k[0] == "ray_arrl_worker_busy_fraction"})
        time.sleep(0.5)
    t.join(timeout=60)
    assert result.get("reason", "").startswith("experiment budget reached"), result
    assert set(seen_actors) == {"arrl/dash/worker-0", "arrl/dash/worker-1"}
    for name, rep in seen_actors.items():
        w = name.rsplit("/", 1)[1]
        assert re.fullmatch(rf"ExperimentWorker\({w}, gpu=\d, simulated, idle, done=0\)", rep), rep
    assert any(re.fullmatch(r"exp \d+ (baseline|candidate|confirm): .*", n) for n in seen_tasks), seen_tasks
    # asked while busy, a worker's repr names its experiment and how far into its budget it is
    assert any(re.fullmatch(r"ExperimentWorker\(worker-[01], gpu=\d, simulated, exp=\d+, \d+/2 s\)", r)
               for r in live), live
    assert {dict(k[1])["worker"] for k in busy} == {"worker-0", "worker-1"}
    assert all(0.0 < v <= 1.0 for v in busy.values()), busy

    db = sqlite3.connect(result["dir"] / "ledger.sqlite")
    counts = dict(db.execute("SELECT status, COUNT(*) FROM experiments WHERE state='done' GROUP BY status"))
    n_acc = db.execute("SELECT COUNT(*) FROM accepted").fetchone()[0]
    best = db.execute("SELECT val_bpb FROM accepted ORDER BY created DESC LIMIT 1").fetchone()
    if best is None:  # no acceptance: the incumbent is the baselines' mean
        best = db.execute("SELECT AVG(val_bpb) FROM experiments WHERE kind='baseline' AND status='ok'").fetchone()
    rewards = [r for (r,) in db.execute("SELECT reward FROM experiments WHERE kind='candidate' AND reward IS NOT NULL")]
    run = ("run", "dash")
    deadline = time.time() + 30  # the metrics agent exports what the driver set on its next report
    while True:
        m = scrape(head["metrics"])
        got = {dict(k[1])["status"]: v for k, v in m.items() if k[0] == "ray_arrl_experiments" and run in k[1]}
        if {s: got.get(s, 0) for s in counts} == {s: float(c) for s, c in counts.items()} or time.time() > deadline:
            break
        time.sleep(1)
    assert {s: v for s, v in got.items() if v} == {s: float(c) for s, c in counts.items()}, (got, counts)
    assert m[("ray_arrl_accepted", frozenset([run]))] == n_acc
    assert m[("ray_arrl_best_val_bpb", frozenset([run]))] == pytest.approx(best[0], rel=1e-6)
    assert m[("ray_arrl_experiments_in_flight", frozenset([run]))] == 0
    bins = {dict(k[1])["bin"]: v for k, v in m.items() if k[0] == "ray_arrl_reward_bin" and run in k[1]}
    assert sum(bins.values()) == len(rewards) > 0
    assert m[("ray_arrl_proposals_per_second", frozenset([run]))] > 0
    assert m[("ray_arrl_policy_version", frozenset([run]))] == 0  # a random policy does not learn
    ray.shutdown()


def test_launch_through_ray_client(head, tmp_path):
    cfg = write_config(tmp_path, budget=0.2, n=8)
    out = subprocess.run([str(BIN / "arrl"), "launch", str(cfg), "--name", "via-client", "--address",
                          f"ray://127.0.0.1:{head['client']}", "--runs-dir", str(tmp_path / "runs")],
                         env=head["env"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    db = sqlite3.connect(tmp_path / "runs" / "via-client" / "ledger.sqlite")
    assert db.execute("SELECT value FROM meta WHERE key='status'").fetchone()[0] == '"finished"'
    assert db.execute("SELECT COUNT(*) FROM experiments WHERE kind!='baseline' AND state='done'").fetchone()[0] >= 8


def test_submit_returns_a_job_that_runs_the_loop(head, tmp_path):
    """From a shell whose PATH has no venv (nor had the head's `ray start`): the job runs, and the commands
    `--submit` prints work exactly as printed."""
    cfg = write_config(tmp_path, budget=0.2, n=8)
    url = f"http://127.0.0.1:{head['dashboard']}"
    runs = tmp_path / "runs"
    assert shutil.which("arrl", path=head["env"]["PATH"]) is None  # nothing of the venv on PATH
    t0 = time.time()
    out = subprocess.run([str(BIN / "arrl"), "launch", str(cfg), "--submit", "--name", "via-job", "--address", url,
                          "--runs-dir", str(runs)], env=head["env"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    submit_s = time.time() - t0
    job_id = re.search(r"as Ray job (\S+)", out.stdout).group(1)
    printed = dict(re.findall(r"^  ([a-z ()]+):\s+(.+)$", out.stdout, re.M))
    assert set(printed) == {"follow its log", "its state", "stop it", "its run (if this is the head)",
                            "its run (on the head)"}, out.stdout  # this head's PATH has no arrl: both
    assert printed["its run (on the head)"].startswith("arrl status via-job --runs-dir ")

    def shell(what: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", "-c", printed[what]], env=head["env"], capture_output=True, text=True,
                              timeout=timeout, cwd=tmp_path)

    logs = shell("follow its log", timeout=300)  # returns when the job ends
    assert logs.returncode == 0, logs.stdout[-2000:] + logs.stderr[-2000:]
    assert "stopped: experiment budget reached" in logs.stdout, logs.stdout[-3000:]
    state = shell("its state")
    assert state.returncode == 0 and "succeeded" in state.stdout.lower(), state.stdout[-2000:] + state.stderr[-2000:]
    status = shell("its run (if this is the head)")
    assert status.returncode == 0 and "via-job" in status.stdout and "finished" in status.stdout, \
        status.stdout[-2000:] + status.stderr[-2000:]
    assert job_id in printed["stop it"]
    db = sqlite3.connect(runs / "via-job" / "ledger.sqlite")
    assert db.execute("SELECT value FROM meta WHERE key='status'").fetchone()[0] == '"finished"'
    assert submit_s < 60  # the client returned without waiting for the run


def test_submit_without_a_cluster_is_one_line(tmp_path):
    cfg = write_config(tmp_path, budget=0.2, n=8)
    (port,) = free_ports(1)  # nothing listens there
    out = subprocess.run([str(BIN / "arrl"), "launch", str(cfg), "--submit", "--address", f"http://127.0.0.1:{port}"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "no Ray dashboard answers" in out.stderr, out.stderr


def test_a_cluster_node_refuses_unsandboxed_untrusted_code(tmp_path, monkeypatch):
    """ARRL_CLUSTER_NODE=1 (the node image): the process sandbox would run agent code next to the host's
    Docker socket; the worker refuses at start-up and launch says so in one line, leaving nothing running."""
    from arrl import config as config_mod
    from arrl.config import ConfigError
    from arrl.launch import launch
    from arrl.worker.worker import UnsafeNode, check_node

    check_node("process")  # not a cluster node: anything goes
    monkeypatch.setenv("ARRL_CLUSTER_NODE", "1")
    with pytest.raises(UnsafeNode, match='sandbox = "docker"'):
        check_node("process")
    with pytest.raises(UnsafeNode, match="bwrap"):
        check_node("docker", evaluator_isolation="none")
    check_node("docker", evaluator_isolation="bwrap")

    cfg = config_mod.load(write_config(tmp_path, budget=0.2, n=4))
    cfg.workers.sandbox = "process"
    cfg.name = "unsafe"
    with pytest.raises(ConfigError, match='a worker could not start: .*sandbox = "docker"'):
        launch(cfg, runs=tmp_path / "runs", log=lambda s: None)
    assert not ray.is_initialized()  # the failed launch shut its Ray down
