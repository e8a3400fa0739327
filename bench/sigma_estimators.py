"""How often each noise estimator lands within 2x of the true sigma, on seeded simulated runs.

    .venv/bin/python bench/sigma_estimators.py [--draws 20000] [--json out.json]

Each draw is one loop's worth of repeat runs: `noise_runs` baselines plus some confirmation
pairs, every run normal noise of sigma 1 around its source's value. With `--outlier K` one
baseline of each draw is moved up by K sigma (a run that lost its cores). For each
composition it prints, per estimator, the share of draws within 2x of the true sigma
(0.5 <= estimate <= 2), the median of estimate / sigma and its 10th and 90th percentiles:

  pairwise   what the loop uses (`arrl.driver.noise.pooled`): the median of every |a - b|
             between two runs of one source (their lower 30% point where one run would
             spoil half of them: 3 or 4 baselines alone), over its simulated value for sigma 1
  meddev     the loop's earlier estimator: the median of every run's |deviation| from its
             source's median, over its simulated value for sigma 1 (one of the five
             deviations of five baselines is always 0)
  sd         the classical pooled standard deviation

Nothing is trained; it takes a few seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from arrl.driver import noise as acceptance

COMPOSITIONS = {  # name: group sizes (the baselines first)
    "3 baselines": (3,),
    "5 baselines": (5,),
    "5 baselines + 2 pairs": (5, 2, 2),
    "5 baselines + 6 pairs": (5,) + (2,) * 6,
}


def _groups(rng, sizes, draws, outlier):
    out = [rng.standard_normal((draws, n)) for n in sizes]
    if outlier:
        out[0][:, 0] += outlier
    return out


def _pairwise(groups, sizes):
    diffs = []
    for g in groups:
        i, j = np.triu_indices(g.shape[1], k=1)
        diffs.append(np.abs(g[:, i] - g[:, j]))
    sizes = tuple(sorted(sizes))
    return acceptance.statistic(np.concatenate(diffs, axis=1), sizes) / acceptance.consistency(sizes)


def _meddev_scale(sizes, rng):
    return float(np.median(_meddev_raw(_groups(rng, sizes, 4000, 0.0))))


def _meddev_raw(groups):
    devs = [np.abs(g - np.median(g, axis=1, keepdims=True)) for g in groups]
    return np.median(np.concatenate(devs, axis=1), axis=1)


def _sd(groups):
    ss = sum(((g - g.mean(axis=1, keepdims=True)) ** 2).sum(axis=1) for g in groups)
    dof = sum(g.shape[1] - 1 for g in groups)
    return np.sqrt(ss / dof)


def _summary(est):
    return {"within_2x": float(np.mean((est >= 0.5) & (est <= 2.0))), "median": float(np.median(est)),
            "p10": float(np.percentile(est, 10)), "p90": float(np.percentile(est, 90))}


def run(draws: int, outliers: list[float], seed: int = 0) -> list[dict]:
    rows = []
    for outlier in outliers:
        for name, sizes in COMPOSITIONS.items():
            rng = np.random.default_rng(seed)
            groups = _groups(rng, sizes, draws, outlier)
            ests = {"pairwise": _pairwise(groups, sizes),
                    "meddev": _meddev_raw(groups) / _meddev_scale(sizes, np.random.default_rng(seed + 1)),
                    "sd": _sd(groups)}
            for est_name, est in ests.items():
                rows.append({"composition": name, "outlier_sigma": outlier, "estimator": est_name, **_summary(est)})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=20000)
    ap.add_argument("--outlier", type=float, action="append", default=None,
                    help="sigmas added to one baseline per draw (repeatable; default 0 and 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.draws < 100:
        print("sigma_estimators: --draws must be at least 100", file=sys.stderr)
        return 2
    rows = run(args.draws, args.outlier or [0.0, 20.0], args.seed)
    print(f"{'composition':24} {'outlier':>7} {'estimator':>9} {'within 2x':>9} {'median':>7} {'p10':>6} {'p90':>6}")
    for r in rows:
        print(f"{r['composition']:24} {r['outlier_sigma']:7g} {r['estimator']:>9} {r['within_2x']:9.0%} "
              f"{r['median']:7.2f} {r['p10']:6.2f} {r['p90']:6.2f}")
    if args.json:
        args.json.write_text(json.dumps({"draws": args.draws, "seed": args.seed, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
