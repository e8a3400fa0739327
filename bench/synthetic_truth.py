"""What each method of `arrl bench research` hands back on the synthetic target, without noise.

    .venv/bin/python bench/synthetic_truth.py OUT [--experiments 150]

OUT is the output folder of `arrl bench research --target synthetic` (its `runs/`). The research
table follows the best single *measurement*, which rewards a lucky run and any method that
measures good sources more often. The synthetic target's val_bpb without noise is known
(`arrl.worker.sandbox.simulated.value`), so for every run this prints the noiseless val_bpb of what the method
would hand a researcher after N/2 and after N sandbox runs:

- loop methods (random, frozen, rl): the incumbent, i.e. the last source accepted on the first
  n runs (the baseline before any acceptance);
- tune: the trial with the best measured val_bpb among its first n finished trials.

The same values are the noiseless column of the research table (arrl.bench.research.loop_truth and
tune_truth); this prints them per seed. Runs are counted as the research table counts them
(sandbox runs in the order they finished, without failed edits and results answered from
the ledger). Then the median per method.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from arrl import paths
from arrl.bench import research
from arrl import target as target_mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--experiments", type=int, default=150)
    a = ap.parse_args()
    tgt = target_mod.load("synthetic", paths.targets_dir())
    cuts = [a.experiments // 2, a.experiments]
    by: dict = {}
    for d in sorted((a.out / "runs").iterdir()):
        if d.name.endswith(".partial") or not d.is_dir():
            continue
        method, seed = d.name.split("-")[1], d.name.rsplit("-s", 1)[1]
        truth = research.tune_truth(d, tgt) if method == "tune" else research.loop_truth(d, tgt)
        vals = [truth[min(n, len(truth)) - 1] for n in cuts]
        by.setdefault(method, []).append(vals)
        print(f"{method:<7} seed {seed}: " + ", ".join(f"{v:.4f} after {n}" for v, n in zip(vals, cuts)))
    print()
    print(f"| method | seeds | noiseless val_bpb after {cuts[0]} runs: median (min – max) | after {cuts[1]} runs |")
    print("|---|---|---|---|")
    for method in research.METHODS:
        if method not in by:
            continue
        cols = []
        for i in range(len(cuts)):
            xs = [v[i] for v in by[method]]
            cols.append(f"{statistics.median(xs):.4f} ({min(xs):.4f} – {max(xs):.4f})")
        print(f"| {method} | {len(by[method])} | {cols[0]} | {cols[1]} |")


if __name__ == "__main__":
    main()
