"""Duty cycle of the loop with simulated workers, and the driver's cost per experiment.

    .venv/bin/python bench/duty_cycle.py duty [--workers 1 4 16] [--budget 30] [--rounds 3]
    .venv/bin/python bench/duty_cycle.py driver [--experiments 2000] [--workers 16]

`duty`: for each worker count, a run of the synthetic target on the `simulated` backend
(each experiment "trains" for --budget seconds; fake GPUs, one per worker) with the
random catalog policy, until rounds x workers experiments ran. Duty cycle = seconds spent
training / (workers x wall seconds), overall (first start to last finish, baselines
included) and while the driver was still handing out work (first start to last start;
after that the run only drains: confirmations of the last candidates run while the other
workers have nothing left under the experiment budget). Workers are all up before the
clock starts (actor start-up is a one-time cost). `driver`: the same with a 0.01 s budget
and many experiments; the driver's CPU time per experiment and its memory over the run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import psutil

from arrl import config as config_mod
from arrl.launch import launch


def run(workers: int, budget: float, experiments: int, noise_runs: int, on_log=None) -> tuple[Path, float]:
    name = f"bench-{workers}w-{int(time.time())}"
    cfg = config_mod.from_dict({
        "target": "synthetic", "name": name,
        "policy": {"kind": "random", "fmt": "catalog", "group_size": 4},
        "workers": {"count": workers, "gpus_per_worker": 1.0, "sandbox": "simulated", "budget_s": budget},
        "search": {"noise_runs": noise_runs}, "oracle": {"max_experiments": experiments}})
    runs = Path(tempfile.mkdtemp(prefix="arrl-bench-"))
    t0 = time.time()
    _, d = launch(cfg, runs=runs, log=on_log or (lambda s: None))
    return d, time.time() - t0


def duty(d: Path, workers: int) -> dict:
    db = sqlite3.connect(d / "ledger.sqlite")
    rows = db.execute("SELECT kind, started, finished, train_s FROM experiments WHERE train_s IS NOT NULL").fetchall()
    t_start = min(r[1] for r in rows)
    t_end = max(r[2] for r in rows)
    t_last = max(r[1] for r in rows)  # after the last start the run only drains
    train = sum(r[3] for r in rows)
    # training seconds inside [t_start, t_last]: the window in which the driver was handing out work
    issuing = sum(max(0.0, min(r[2], t_last) - max(r[1], t_start)) for r in rows)
    return {"workers": workers, "experiments": len(rows), "wall_s": round(t_end - t_start, 1),
            "duty_overall": round(train / (workers * (t_end - t_start)), 4),
            "duty_while_issuing": round(issuing / (workers * (t_last - t_start)), 4) if t_last > t_start else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    a = sub.add_parser("duty")
    a.add_argument("--workers", type=int, nargs="+", default=[1, 4, 16])
    a.add_argument("--budget", type=float, default=30.0)
    a.add_argument("--rounds", type=int, default=3)
    b = sub.add_parser("driver")
    b.add_argument("--experiments", type=int, default=2000)
    b.add_argument("--workers", type=int, default=16)
    args = ap.parse_args()
    if args.mode == "duty":
        for w in args.workers:
            d, wall = run(w, args.budget, args.rounds * w, noise_runs=3)
            print(json.dumps({**duty(d, w), "budget_s": args.budget, "launch_wall_s": round(wall, 1)}), flush=True)
    else:
        me = psutil.Process()
        samples = []
        count = [0]

        def on_log(line: str) -> None:
            if line.startswith("exp "):
                count[0] += 1
                if count[0] % 250 == 0:
                    samples.append((count[0], round(me.memory_info().rss / 2**20, 1)))

        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        d, wall = run(args.workers, 0.01, args.experiments, noise_runs=3, on_log=on_log)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        n = sqlite3.connect(d / "ledger.sqlite").execute("SELECT COUNT(*) FROM experiments").fetchone()[0]
        print(json.dumps({"experiments": n, "workers": args.workers, "wall_s": round(wall, 1),
                          "driver_cpu_ms_per_experiment": round(1000 * cpu / n, 2),
                          "rss_mb_every_250": samples}), flush=True)
    print(f"# {time.strftime('%Y-%m-%d')} {os.cpu_count()} cores, python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
