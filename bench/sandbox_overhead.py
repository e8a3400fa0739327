"""Per-run overhead of the process sandbox on the tiny target.

overhead = wall time - the time the training script itself runs, split into
    setup  = sandbox spawn -> the Python interpreter is up inside the sandbox (`launch`)
    eval   = training process exit -> val_bpb known (the evaluator is pre-started)
    rest   = everything else the sandbox does (kill, log drain, bookkeeping)
Also shown: the script's own start-up (its imports, e.g. `import torch`, before it starts
the training clock), which any way of running it pays, and its training time.
Median over --repeats runs. Usage:

    .venv/bin/python bench/sandbox_overhead.py [--repeats 5] [--budget 30] [--isolation auto]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from arrl import paths, target
from arrl.worker.sandbox.process import ProcessSandbox
from arrl.worker.sandbox.config import SandboxConfig
from env import manifest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--budget", type=float, help="training budget (default: the target's)")
    ap.add_argument("--isolation", default="auto", choices=["auto", "bwrap", "none"])
    args = ap.parse_args()

    tgt = target.load("tiny", paths.targets_dir())
    data_dir = paths.data_dir(tgt.profile)
    meta = manifest.verify(data_dir, full=False)
    config = SandboxConfig(budget_s=args.budget or tgt.budget_s, grace_s=tgt.grace_s, memory_mb=tgt.memory_mb,
                           isolation=args.isolation)
    box = ProcessSandbox(paths.env_dir(), data_dir, config)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            out = box.run(tgt.source(), Path(tmp) / f"run{i}", seed=i, env_hash=manifest.env_hash(meta))
            t = out.timings
            if out.status != "ok":
                print(f"run {i}: status {out.status}: {out.message}", file=sys.stderr)
                return 1
            script_s = t.train_s + (t.setup_s - t.launch_s)  # launch -> exit
            rows.append({"setup": t.launch_s, "eval": t.eval_s, "overhead": t.wall_s - script_s,
                         "startup": t.setup_s - t.launch_s, "train": t.train_s, "wall": t.wall_s,
                         "val_bpb": out.val_bpb})
            print(" ".join(f"{k}={v:.3f}" for k, v in rows[-1].items()), file=sys.stderr)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(f"# {time.strftime('%Y-%m-%d')} · {platform.node()} · {platform.processor() or platform.machine()} · "
          f"isolation {box.isolation} · budget {config.budget_s:g} s · median of {args.repeats}")
    print("| sandbox overhead (s) | setup (s) | eval (s) | script start-up (s) | training (s) | wall (s) | val_bpb |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {med['overhead']:.2f} | {med['setup']:.2f} | {med['eval']:.2f} | {med['startup']:.2f} | "
          f"{med['train']:.2f} | {med['wall']:.2f} | {med['val_bpb']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
