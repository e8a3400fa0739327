"""Trackers and notifications ([track], arrl.track) against real local backends: an MLflow file store read back
with MlflowClient, a W&B offline run read back from its own run files, and a webhook on 127.0.0.1 (answering,
down, refusing, hanging). Runs are real `arrl launch` processes on the simulated target; one is killed with
SIGKILL and resumed, and nothing is lost or logged twice."""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from arrl import config as config_mod
from arrl.ledger.reader import open_read_only
from arrl.ledger.store import Store
from arrl.track import items as items_mod
from arrl.track import notices, wandb_files
from arrl.track.wandb_sink import run_id
from ledgers import kill_when

RUN = {"target": "synthetic",
       "policy": {"kind": "random", "fmt": "catalog", "group_size": 4},
       "workers": {"count": 1, "gpus_per_worker": 1.0, "sandbox": "simulated", "budget_s": 0.2},
       "search": {"noise_runs": 2, "min_sigma": 0.001},
       "oracle": {"max_experiments": 16}}


class Hook:
    """A webhook receiver on 127.0.0.1: records each JSON body; `mode` ok | refuse (503) | hang."""

    def __init__(self, mode: str = "ok", port: int = 0):
        self.mode, self.bodies = mode, []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if outer.mode == "hang":
                    time.sleep(30)
                    return
                if outer.mode == "refuse":
                    self.send_response(503)
                    self.end_headers()
                    return
                outer.bodies.append(json.loads(body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def free_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (a tracker that is down)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/hook"


def write_config(tmp_path, name: str, track: dict, **oracle) -> Path:
    cfg = json.loads(json.dumps(RUN))
    cfg["name"] = name
    cfg["track"] = {"timeout_s": 1.0, "retry_s": 1.0, "flush_s": 10.0, **track}
    cfg["oracle"].update(oracle)
    f = tmp_path / f"{name}.toml"
    f.write_text(config_mod.to_toml(config_mod.from_dict(cfg)))
    return f


def env_for(tmp_path) -> dict:
    return dict(os.environ, ARRL_RUNS_DIR=str(tmp_path / "runs"), RAY_ADDRESS="", WANDB_SILENT="true")


def arrl(tmp_path, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "arrl", *map(str, args)], env=env_for(tmp_path), capture_output=True,
                          text=True, timeout=timeout)


def expected_items(d: Path) -> list:
    with open_read_only(d) as r:
        cfg = json.loads((d / "config.json").read_text())
        return [it for it in items_mod.derive(r, cfg) if it.kind != "config"]


def mlflow_run(uri: str, name: str):
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps file stores behind this switch
    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name("arrl")
    runs = c.search_runs([exp.experiment_id], filter_string=f"tags.`arrl.run` = '{name}'")
    assert len(runs) == 1, [r.info.run_id for r in runs]  # one MLflow run per arrl run, a resume included
    return c, runs[0]


def check_mlflow(uri: str, d: Path) -> None:
    """Every item in the MLflow run, each metric value logged exactly once at its step."""
    c, run = mlflow_run(uri, d.name)
    want = expected_items(d)
    histories = {k: Counter(m.step for m in c.get_metric_history(run.info.run_id, k)) for k in run.data.metrics}
    for it in want:
        for k, v in it.metrics.items():
            assert histories.get(k, Counter())[it.step] == 1, (it.key, k, histories.get(k))
    steps = {k: sum(h.values()) for k, h in histories.items()}
    logged = Counter(k for it in want for k in it.metrics)
    assert steps == dict(logged)  # nothing more than the ledger's items, nothing twice
    exps = [it for it in want if it.kind == "exp"]
    for it in exps:
        assert run.data.params[f"exp.{it.step:06d}.status"] == it.texts["status"]
        assert run.data.params[f"exp.{it.step:06d}.edit"] == it.texts["edit"]
    accepted = [it for it in want if it.kind == "accepted"]
    assert {k for k in run.data.tags if k.startswith("accepted.")} == {f"accepted.{it.step:04d}" for it in accepted}
    target = json.loads((d / "config.json").read_text())["target"]
    assert run.data.params["config.target"] == target
    assert run.data.tags.get("arrl.env_hash")
    trained = next(it for it in exps if it.texts["kind"] == "candidate" and it.files)
    files = {f.path for f in c.list_artifacts(run.info.run_id, f"experiments/{trained.step:06d}")}
    assert files == set(trained.files) and f"experiments/{trained.step:06d}/diff.patch" in files, files
    for path, text in trained.files.items():
        assert Path(c.download_artifacts(run.info.run_id, path)).read_text() == text


def check_wandb(d: Path) -> None:
    """Every item is one row of the W&B run's files, none twice; the config is there."""
    rows = wandb_files.history(d, run_id(d.name))
    keys = Counter(r.get("arrl/key") for r in rows)
    want = expected_items(d)
    assert keys == Counter(it.key for it in want), set(keys) ^ {it.key for it in want}
    by_key = {r["arrl/key"]: r for r in rows}
    for it in want:
        assert by_key[it.key][it.axis] == it.step
        for k, v in it.metrics.items():
            assert by_key[it.key][k] == pytest.approx(v)
    conf = wandb_files.config(d, run_id(d.name))
    target = json.loads((d / "config.json").read_text())["target"]
    assert conf["target"] in (target, {"value": target})


def test_a_run_is_tracked_in_mlflow_and_wandb_and_notified(tmp_path):
    hook = Hook()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # MLflow's recommended local store (the kill test uses a file store)
    try:
        f = write_config(tmp_path, "tracked", {"mlflow": uri, "wandb": "arrl-tests", "webhook": hook.url})
        out = arrl(tmp_path, "launch", f)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        d = tmp_path / "runs" / "tracked"
        with open_read_only(d) as r:
            accepted = r.accepted_with_summaries()
            assert accepted, "the run accepted nothing: the accepted-edit items go unchecked"
            assert r.deliveries("mlflow") >= {it.key for it in expected_items(d)}
        check_mlflow(uri, d)
        check_wandb(d)
        _, run = mlflow_run(uri, "tracked")
        # the resolved config: an unset field is sent as what it became (`arrl config RUN` prints the same)
        assert run.data.params["config.learner.minibatch_size"] not in ("None", "")
        assert run.data.params["config.workers.memory_mb"] not in ("None", "")
        assert not any(k.startswith("config.track.") for k in run.data.params)
        texts = [b["text"] for b in hook.bodies]
        keys = [b["arrl"]["key"] for b in hook.bodies]
        assert len(keys) == len(set(keys))
        assert {f"notice:accepted:{a['exp_id']}" for a in accepted} <= set(keys)
        assert sum(k.startswith("notice:stopped:") for k in keys) == 1
        assert any("stopped: experiment budget reached (16); best val_bpb" in t for t in texts), texts
        assert "warning: tracker" not in out.stdout
    finally:
        hook.close()


def test_a_killed_run_resumes_with_nothing_lost_or_logged_twice(tmp_path):
    uri = (tmp_path / "mlruns").as_uri()
    f = write_config(tmp_path, "killed", {"mlflow": uri, "wandb": "arrl-tests"}, max_experiments=40)
    proc = subprocess.Popen([sys.executable, "-m", "arrl", "launch", str(f)], env=env_for(tmp_path),
                            stdout=(tmp_path / "first.log").open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    d = tmp_path / "runs" / "killed"
    # killed once the trackers have taken something, at a random moment
    kill_when(proc, d, "SELECT COUNT(*) FROM deliveries WHERE sink='wandb'", 6, seed=5, spread_s=3.0, timeout_s=180)
    with open_read_only(d) as r:
        assert r.meta("status") != "finished", "the run ended before the kill"
    out = arrl(tmp_path, "launch", "--resume", "killed")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    check_mlflow(uri, d)
    check_wandb(d)
    assert len(wandb_files.run_files(d, run_id("killed"))) == 2  # the killed process's run files and the resumed


def test_a_tracker_that_is_down_never_stops_the_run_and_gets_everything_later(tmp_path):
    """MLflow's store is unusable (its folder's place is taken by a file) and the webhook is down for the whole
    run: the run ends as it would, with one warning each; `arrl track` later sends everything, once."""
    blocked = tmp_path / "store"
    blocked.write_text("not a folder")
    uri = f"sqlite:///{blocked / 'mlflow.db'}"
    down = free_port_url()
    f = write_config(tmp_path, "down", {"mlflow": uri, "webhook": down})
    t0 = time.monotonic()
    out = arrl(tmp_path, "launch", f)
    took = time.monotonic() - t0
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.count("warning: tracker mlflow failed") == 1, out.stdout[-3000:]
    assert out.stdout.count("warning: tracker webhook failed") == 1
    assert "wait in the ledger (`arrl track down` sends them)" in out.stdout
    assert took < 120, took
    d = tmp_path / "runs" / "down"
    with open_read_only(d) as r:
        assert not r.deliveries("mlflow") and not r.deliveries("webhook")
    blocked.unlink()  # the store is back, and a webhook listens
    hook = Hook()
    try:
        again = arrl(tmp_path, "track", "down", "--webhook", hook.url)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "everything sent" in again.stdout
        check_mlflow(uri, d)
        keys = [b["arrl"]["key"] for b in hook.bodies]
        assert keys and len(keys) == len(set(keys))
        assert any(k.startswith("notice:stopped:") for k in keys)
        assert arrl(tmp_path, "track", "down", "--webhook", hook.url).returncode == 0
        assert [b["arrl"]["key"] for b in hook.bodies] == keys  # nothing sent twice
        check_mlflow(uri, d)
    finally:
        hook.close()


@pytest.mark.parametrize("mode", ["hang", "refuse"])
def test_a_webhook_that_hangs_or_refuses_is_bounded(tmp_path, mode):
    hook = Hook(mode)
    try:
        f = write_config(tmp_path, f"hook-{mode}", {"webhook": hook.url, "flush_s": 3.0})
        t0 = time.monotonic()
        out = arrl(tmp_path, "launch", f)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert out.stdout.count("warning: tracker webhook failed") == 1
        assert ("timed out" in out.stdout) if mode == "hang" else ("answered 503" in out.stdout)
        assert time.monotonic() - t0 < 120
        assert not hook.bodies
    finally:
        hook.close()


def test_notices_from_the_ledger(tmp_path):
    """Crash streaks (one notice per streak), attention events, an accepted edit and the stop, each keyed by its
    ledger row; the W&B run-file reader stops at a damaged record."""
    s = Store(tmp_path / "run")
    statuses = ["crash", "oom", "crash", "ok", "crash", "crash", "timeout", "nan", "ok"]
    with s.tx():
        for i, st in enumerate(statuses):
            e = s.add_experiment("candidate", i, f"s{i}", f"n{i}", summary=f"edit {i}")
            s.finish(e, status=st, val_bpb=1.0 if st == "ok" else None, reward=-1.0)
        s.accept(4, 0.99, 1.01)
        s.event("learner_restarted", version=2, restarts=1)
        s.event("sigma_warning", warning="sigma 0.05 is above the target's 0.01", sigma=0.05)
        s.event("stopped", reason="max_experiments (9)")
    got = notices.derive(s, "r", ["accepted", "stopped", "attention"], crash_streak=3)
    keys = [n.key for n in got]
    assert keys.count("notice:crashes:3") == 1 and keys.count("notice:crashes:7") == 1  # two streaks of 3+
    assert sum(k.startswith("notice:crashes:") for k in keys) == 2
    assert "notice:accepted:4" in keys and sum(k.startswith("notice:stopped:") for k in keys) == 1
    texts = " | ".join(n.text for n in got)
    assert "learner died and was restarted" in texts and "sigma 0.05" in texts
    assert notices.derive(s, "r", ["accepted"], 3)[0].key == "notice:accepted:4"
    s.close()
    # a transaction log cut short mid-record reads up to the last whole record
    f = tmp_path / "run-x.wandb"
    import struct
    import zlib

    def rec(data: bytes) -> bytes:
        return struct.pack("<IHB", zlib.crc32(data, zlib.crc32(bytes([1]))) & 0xFFFFFFFF, len(data), 1) + data

    f.write_bytes(wandb_files.MAGIC + b"\xe1\xbe\x00" + rec(b"one") + rec(b"two")[:-1])
    assert list(wandb_files.records(f)) == [b"one"]


@pytest.mark.parametrize("flags, says", [
    (["--mlflow", "gopher://x/y"], "[track] mlflow: 'gopher://x/y' is not a tracking URI"),
    (["--mlflow", "http://"], "[track] mlflow: 'http://' names no host"),
    (["--webhook", "ftp://host/x"], "[track] webhook: 'ftp://host/x' is not an http(s) URL"),
])
def test_a_bad_tracker_is_one_line_at_launch(tmp_path, flags, says):
    f = write_config(tmp_path, "bad", {})
    out = arrl(tmp_path, "launch", f, *flags, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith(f"arrl: error: {says}"), out.stderr
    assert not (tmp_path / "runs" / "bad" / "ledger.sqlite").exists()


def test_online_wandb_without_a_key_is_one_line(tmp_path):
    f = write_config(tmp_path, "nokey", {"wandb": "p", "wandb_mode": "online"})
    env = {k: v for k, v in env_for(tmp_path).items() if k != "WANDB_API_KEY"}
    env.update(HOME=str(tmp_path), NETRC=str(tmp_path / "none"))
    out = subprocess.run([sys.executable, "-m", "arrl", "launch", str(f)], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1
    assert "[track] wandb: online mode needs an API key" in out.stderr
    bad = write_config(tmp_path, "badnotify", {})
    bad.write_text(re.sub(r"notify = \[.*\]", 'notify = ["accepted", "lunch"]', bad.read_text()))
    out = arrl(tmp_path, "launch", bad, timeout=60)
    assert out.returncode == 2 and "[track] notify: 'lunch' is not one of accepted, stopped, attention" in out.stderr


def test_learner_figures_and_a_half_written_item_on_a_hand_made_ledger(tmp_path):
    """Adapter versions reach both trackers on their own axis; an MLflow item half written by a killed driver gets
    only its missing values; a second outbox over the same ledger sends nothing."""
    from mlflow.tracking import MlflowClient

    d = tmp_path / "hand"
    s = Store(d)
    with s.tx():
        for i, v in enumerate([1.20, 1.21, 1.15]):
            e = s.add_experiment("baseline" if i < 2 else "candidate", i, f"s{i}", f"n{i}", summary=f"edit {i}",
                                 diff=f"--- a\n+++ b\n@@ -1 +1 @@\n-x{i}\n+y{i}\n")
            s.finish(e, status="ok", val_bpb=v, reward=None if i < 2 else 2.5, train_s=30.0, tokens_per_s=1000.0 + i,
                     outcome={"env_hash": "abc123"})
        s.put("noise", {"sigma": 0.01})
        s.add_test_score(3, 3, "ok", 1.17)
        for v, kl in ((1, 0.02), (2, 0.05)):
            s.add_policy_version(v, samples_in=12, reward_mean=-1.0 + v, update_s=100.0,
                                 metrics={"kl": kl, "clip_fraction": 0.1 * v, "total_loss": -0.2})
    s.close()
    cfg = config_mod.Config()
    cfg.name = "hand"
    cfg.track.mlflow = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg.track.wandb = "arrl-tests"
    (d / "config.json").write_text(json.dumps(cfg.to_dict()))
    # a driver killed mid-write left exp 3's val_bpb in MLflow and nothing else of it
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    c = MlflowClient(tracking_uri=cfg.track.mlflow)
    exp = c.create_experiment("arrl", (tmp_path / "mlartifacts").as_uri())
    run = c.create_run(exp, run_name="hand", tags={"arrl.run": "hand"})
    c.log_metric(run.info.run_id, "val_bpb", 1.15, step=3)
    from arrl import track

    box = track.outbox_for(cfg, d, log=lambda *_: None)
    assert box.sync() == 0 and box.close() == 0
    check_mlflow(cfg.track.mlflow, d)
    c, run = mlflow_run(cfg.track.mlflow, "hand")
    kl = {m.step: m.value for m in c.get_metric_history(run.info.run_id, "learner/kl")}
    assert kl == {1: 0.02, 2: 0.05}
    assert {m.step for m in c.get_metric_history(run.info.run_id, "learner/reward_mean")} == {1, 2}
    assert [m.value for m in c.get_metric_history(run.info.run_id, "test_bpb")] == [1.17]
    rows = wandb_files.history(d, run_id("hand"))
    learner = sorted((r["adapter_version"], r["learner/clip_fraction"]) for r in rows if "adapter_version" in r)
    assert learner == [(1, pytest.approx(0.1)), (2, pytest.approx(0.2))]
    assert wandb_files.config(d, run_id("hand")).get("arrl.env_hash") in ("abc123", {"value": "abc123"})
    # nothing new: a second outbox over the same ledger sends nothing again
    box = track.outbox_for(cfg, d, log=lambda *_: None)
    assert box.sync() == 0 and box.close() == 0
    assert Counter(r.get("arrl/key") for r in wandb_files.history(d, run_id("hand"))) == \
        Counter(it.key for it in expected_items(d))
    check_mlflow(cfg.track.mlflow, d)


def test_a_webhook_that_dies_mid_run(tmp_path):
    """The webhook takes the first notices, then goes down: one warning, the run ends as it would; once it is
    back, `arrl track` sends the rest, none twice."""
    hook = Hook()
    port = hook.server.server_address[1]
    f = write_config(tmp_path, "dies", {"webhook": hook.url, "flush_s": 2.0}, max_experiments=30)
    proc = subprocess.Popen([sys.executable, "-m", "arrl", "launch", str(f)], env=env_for(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not hook.bodies and time.monotonic() < deadline:
            time.sleep(0.2)
        assert hook.bodies, "no notice before the deadline"
        hook.close()  # the webhook dies mid-run
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-3000:]
        assert out.count("warning: tracker webhook failed") == 1, out[-3000:]
        first = [b["arrl"]["key"] for b in hook.bodies]
        hook = Hook(port=port)  # back, on the same address
        again = arrl(tmp_path, "track", "dies")
        assert again.returncode == 0, again.stdout + again.stderr
        later = [b["arrl"]["key"] for b in hook.bodies]
        assert later and not set(first) & set(later)  # none twice
        with open_read_only(tmp_path / "runs" / "dies") as r:
            want = {n.key for n in notices.derive(r, "dies", ["accepted", "stopped", "attention"], 3)}
        assert set(first) | set(later) == want
    finally:
        hook.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_submit_carries_the_tracker_flags():
    """`arrl launch --submit --mlflow URI ...`: the Ray job's entrypoint passes them on, quoted for the shell."""
    from arrl import jobs

    cmd = jobs.entrypoint("night", None, None, None, {"mlflow": "sqlite:////data/my runs/m.db", "webhook": "http://h/x"})
    assert "--mlflow 'sqlite:////data/my runs/m.db'" in cmd and "--webhook http://h/x" in cmd
    assert "--wandb" not in cmd and "--mlflow" not in jobs.entrypoint("night", None, None, None)
