"""The noise sigma a run used, replayed from its ledger next to other estimators of the same runs.

    .venv/bin/python bench/noise_replay.py runs/<name>/ledger.sqlite [...] [--alone-sd 0.0181]

For each ledger it walks the `ok` runs in the order they finished (the driver's grouping: one
group per normalised source, results answered from the ledger left out, as
`Driver._estimate_noise`) and, after each run once the baselines are in, prints:

  robust     what the loop uses now: `acceptance.pooled` (median of every |a - b| between two
             runs of one source, divided by its consistency constant), floored at min_sigma;
             ledgers written before it used the median of deviations from each source's
             median, so this column can differ from the ledger's recorded sigma
  base       the same estimator on the baselines alone (`[search] pool_noise = false`)
  sd         the classical pooled standard deviation (sum of squared deviations from each
             source's mean over runs minus sources)
  dofw       each source's own sigma (robust for 3+ runs, |a - b| / sqrt 2 for a pair), pooled as
             variances weighted by their degrees of freedom

and, with `--alone-sd` (the standard deviation of the unedited train.py run alone, e.g. from
bench/default_run.py), each estimator's range as a multiple of it. Nothing is run: it reads
the ledgers only.

`--by-seed`: the baselines of all the ledgers together, grouped by their seed (every run of a
config uses the same baseline seeds, 0 .. noise_runs-1): each seed's runs, mean and standard
deviation, and a one-way random-effects split of the run-to-run variance into the part that
follows the seed (initialisation, data order) and the part that does not (timing: steps
trained within the budget). A new seed's run varies by sqrt(between² + within²).
"""

from __future__ import annotations

import argparse
import math
import sqlite3
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from arrl.driver import noise as acceptance


def _sd(groups: list[list[float]]) -> float:
    multi = [g for g in groups if len(g) >= 2]
    dof = sum(len(g) - 1 for g in multi)
    if not dof:
        return float("nan")
    return math.sqrt(sum(sum((v - statistics.fmean(g)) ** 2 for v in g) for g in multi) / dof)


def _dof_weighted(groups: list[list[float]]) -> float:
    num = dof = 0.0
    for g in groups:
        if len(g) < 2:
            continue
        s = acceptance.estimate(g, 0.0).raw if len(g) >= 3 else abs(g[0] - g[1]) / math.sqrt(2)
        num += (len(g) - 1) * s * s
        dof += len(g) - 1
    return math.sqrt(num / dof) if dof else float("nan")


def replay(path: Path, min_sigma: float = 0.002) -> list[dict]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    rows = db.execute("SELECT id, kind, norm_sha, val_bpb FROM experiments WHERE state='done' AND status='ok' AND "
                      "reused_from IS NULL AND val_bpb IS NOT NULL ORDER BY finished").fetchall()
    n_base = db.execute("SELECT COUNT(*) FROM experiments WHERE kind='baseline'").fetchone()[0]
    groups: dict[str, list[float]] = {}
    base: list[float] = []
    out = []
    for exp, kind, norm, v in rows:
        groups.setdefault(norm, []).append(v)
        if kind == "baseline":
            base.append(v)
        if len(base) < n_base:
            continue
        g = list(groups.values())
        pooled = acceptance.pooled(g, min_sigma)
        out.append({"exp": exp, "dof": pooled.dof, "robust": pooled.sigma,
                    "base": acceptance.pooled([base], min_sigma).sigma, "sd": _sd(g), "dofw": _dof_weighted(g)})
    return out


def by_seed(paths: list[Path]) -> dict:
    """The baselines of all ledgers by seed, and the variance split (one-way random effects, ANOVA)."""
    seeds: dict[int, list[float]] = {}
    for path in paths:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        for seed, v in db.execute("SELECT seed, val_bpb FROM experiments WHERE kind='baseline' AND state='done' "
                                  "AND status='ok' AND val_bpb IS NOT NULL ORDER BY id"):
            seeds.setdefault(seed, []).append(v)
    groups = [g for g in seeds.values() if g]
    n, k = sum(len(g) for g in groups), len(groups)
    grand = statistics.fmean(v for g in groups for v in g)
    ms_within = sum(sum((v - statistics.fmean(g)) ** 2 for v in g) for g in groups) / max(n - k, 1)
    ms_between = sum(len(g) * (statistics.fmean(g) - grand) ** 2 for g in groups) / max(k - 1, 1)
    n0 = (n - sum(len(g) ** 2 for g in groups) / n) / max(k - 1, 1)  # the effective group size
    between2 = max((ms_between - ms_within) / n0, 0.0)
    return {"seeds": {s: g for s, g in sorted(seeds.items())}, "runs": n, "within_sd": math.sqrt(ms_within),
            "between_sd": math.sqrt(between2), "new_seed_sd": math.sqrt(between2 + ms_within),
            "dof_within": n - k, "dof_between": k - 1}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ledgers", nargs="+", type=Path)
    ap.add_argument("--alone-sd", type=float, default=0.0, help="the unedited script's run-to-run SD alone")
    ap.add_argument("--min-sigma", type=float, default=0.002)
    ap.add_argument("--by-seed", action="store_true", help="the baselines by seed, and the seed's share of the noise")
    args = ap.parse_args(argv)
    if args.by_seed:
        r = by_seed(args.ledgers)
        print("| seed | runs | mean | SD | values |")
        print("|---|---|---|---|---|")
        for seed, g in r["seeds"].items():
            sd = f"{statistics.stdev(g):.4f}" if len(g) > 1 else "-"
            print(f"| {seed} | {len(g)} | {statistics.fmean(g):.4f} | {sd} | {', '.join(f'{v:.4f}' for v in g)} |")
        print(f"within a seed SD {r['within_sd']:.4f} ({r['dof_within']} dof); between seeds SD "
              f"{r['between_sd']:.4f} ({r['dof_between']} dof); a new seed's run SD {r['new_seed_sd']:.4f}")
        return 0
    names = ("robust", "base", "sd", "dofw")
    for path in args.ledgers:
        if not path.exists():
            print(f"noise_replay: no ledger at {path}", file=sys.stderr)
            return 2
        steps = replay(path, args.min_sigma)
        print(f"\n{path}")
        print("| after exp | dof | " + " | ".join(names) + " |")
        print("|---|---|" + "---|" * len(names))
        last = None
        for s in steps:
            key = tuple(round(s[n], 4) for n in names)
            if key != last:  # one row per change
                print(f"| {s['exp']} | {s['dof']} | " + " | ".join(f"{s[n]:.4f}" for n in names) + " |")
                last = key
        if args.alone_sd and steps:
            spans = {n: (min(s[n] for s in steps) / args.alone_sd, max(s[n] for s in steps) / args.alone_sd)
                     for n in names}
            print("range / alone SD: " + ", ".join(f"{n} {lo:.2f}-{hi:.2f}x" for n, (lo, hi) in spans.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
