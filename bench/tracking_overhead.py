"""What tracking costs the loop, and what a tracker that is down costs it (issue 25).

    .venv/bin/python bench/tracking_overhead.py [--experiments 60] [--workers 2] [--budget 0.5] [--seeds 3]

Each setting runs the synthetic target on the `simulated` backend (each experiment "trains" --budget
seconds; fake GPUs) with the random catalog policy, in a process of its own (`arrl launch`), for every
seed in turn:
  none      no tracker
  up        MLflow (a SQLite store) + W&B (offline) + a webhook on 127.0.0.1 that answers
  down      the same three unusable: the SQLite store's folder is a file, W&B's project is fine but the
            webhook's port has nothing listening, and MLflow keeps failing (retry_s 1 s, so it is tried often)
For each run: the loop's wall seconds (first experiment start to last finish, from the ledger), the
process's wall seconds (start to exit: the outbox's last flush at the stop included), the driver process's
CPU seconds (the launch process and its threads, not the workers), and what was left unsent.
Every run of every setting is printed, then the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from arrl import config as config_mod


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def receiver():
    """A webhook on 127.0.0.1 that answers 200 (a thread of this process)."""
    import http.server
    import threading

    class H(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}/hook"


def one(setting: str, seed: int, args, root: Path, hook_url: str) -> dict:
    name = f"s{seed}"  # the same name in each setting's own runs folder: the random policy draws the same edits
    runs = root / setting / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    track = {}
    if setting == "up":
        track = {"mlflow": f"sqlite:///{root / 'mlflow.db'}", "wandb": "arrl-bench", "webhook": hook_url,
                 "mlflow_experiment": f"arrl-bench-{seed}"}
    elif setting == "down":
        blocked = root / setting / "blocked"
        blocked.write_text("not a folder")
        track = {"mlflow": f"sqlite:///{blocked / 'mlflow.db'}", "webhook": f"http://127.0.0.1:{free_port()}/h",
                 "retry_s": 1.0, "timeout_s": 1.0}
    cfg = config_mod.from_dict({
        "target": "synthetic", "name": name,
        "policy": {"kind": "random", "fmt": "catalog", "group_size": 4},
        "workers": {"count": args.workers, "gpus_per_worker": 1.0, "sandbox": "simulated", "budget_s": args.budget},
        "search": {"noise_runs": 2}, "oracle": {"max_experiments": args.experiments}, "track": track})
    f = root / setting / f"{name}.toml"
    f.write_text(config_mod.to_toml(cfg))
    env = dict(os.environ, ARRL_RUNS_DIR=str(runs), RAY_ADDRESS="", WANDB_SILENT="true")
    t0 = time.time()
    proc = psutil.Popen([sys.executable, "-m", "arrl", "launch", str(f)], env=env, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True)
    cpu = 0.0
    while proc.poll() is None:
        try:
            t = proc.cpu_times()
            cpu = t.user + t.system  # the launch process alone: its threads (the outbox's too), not Ray's workers
        except psutil.Error:
            pass
        time.sleep(0.2)
    out = proc.stdout.read()
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name}: exit {proc.returncode}\n{out[-2000:]}")
    db = sqlite3.connect(runs / name / "ledger.sqlite")
    first, last = db.execute("SELECT MIN(started), MAX(finished) FROM experiments WHERE train_s IS NOT NULL").fetchone()
    n = db.execute("SELECT COUNT(*) FROM experiments WHERE state='done'").fetchone()[0]
    db.close()
    left = next((int(line.split("track: ")[1].split()[0]) for line in out.splitlines() if line.startswith("track: ")),
                0)
    return {"setting": setting, "seed": seed, "experiments": n, "loop_s": round(last - first, 2),
            "process_s": round(wall, 2), "driver_cpu_s": round(cpu, 2), "unsent": left,
            "warnings": sum("warning: tracker" in line for line in out.splitlines())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiments", type=int, default=60)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--budget", type=float, default=0.5)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="arrl-track-bench-"))
    srv, url = receiver()
    rows = []
    for seed in range(args.seeds):
        for setting in ("none", "up", "down"):
            r = one(setting, seed, args, root, url)
            rows.append(r)
            print(json.dumps(r), flush=True)
    srv.shutdown()
    print("\n| setting | runs | loop s (median) | process s (median) | driver CPU s (median) | unsent | warnings |")
    print("|---|---|---|---|---|---|---|")
    for setting in ("none", "up", "down"):
        rs = [r for r in rows if r["setting"] == setting]
        med = {k: statistics.median(r[k] for r in rs) for k in ("loop_s", "process_s", "driver_cpu_s")}
        print(f"| {setting} | {len(rs)} | {med['loop_s']:.1f} | {med['process_s']:.1f} | {med['driver_cpu_s']:.1f} | "
              f"{', '.join(str(r['unsent']) for r in rs)} | {', '.join(str(r['warnings']) for r in rs)} |")
    print(f"\n(runs in {root})")


if __name__ == "__main__":
    main()
