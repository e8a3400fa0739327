"""Where does greedy search fail? A model of search on targets/synthetic-basins (issue 24, item 6).

The landscape is the simulated sandbox's (arrl.worker.sandbox.simulated): three basins 0.02 apart,
noise 0.002, train.py starting in the second best; from a worse basin's centre no edit of one or two
knobs improves. No Ray, no sandbox: each method gets the same number of runs (equal training seconds,
as every simulated run costs the same), and every seed of every method is reported.

Methods:
  greedy      the loop from one incumbent (bench/synthetic_bound.loop: baselines, the one- and two-run
              margins, confirmation, the re-run rule) with random edits of 1-2 knobs: arrl today
  random      independent uniform draws over the whole catalog: no incumbent
  tpe         Optuna TPE over the whole catalog, one run per trial
  population  an archive of every program that ran, in niches by model size (DEPTH and WIDTH, 4 x 4
              buckets); each niche keeps its best measurement; the parent is the best elite with
              probability --exploit, else a uniformly drawn niche's elite; children are random edits of
              1-2 knobs. A sketch of what issue 24 asks for, without islands or confirmation.

    python bench/basins_bound.py --seeds 50 --experiments 150 [--exploit 0.3]

prints, per method, in how many seeds a program in the best basin ran (its noiseless val_bpb below
REACHED, which only the best basin has) within N/2 and N runs, the median runs to the first such
program, and the median best measurement.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from arrl import paths, target  # noqa: E402
from arrl.worker.sandbox import simulated  # noqa: E402
from synthetic_bound import Random, loop  # noqa: E402

REACHED = 1.0 + simulated.BASIN_STEP * 0.75  # below the second basin's floor (1.02) by 2.5 sigma of the noise


class Basins:
    """targets/synthetic-basins in synthetic_bound's terms: knobs, sizes, start and the noiseless value."""

    def __init__(self):
        self.knobs = target.load("synthetic-basins", paths.targets_dir()).catalog
        self.sizes = [len(k.values) for k in self.knobs]
        self.start = tuple(k.values.index(k.current) for k in self.knobs)
        self.opt = [simulated.optimum(k) for k in self.knobs]

    def value(self, c) -> float:
        return simulated.value_at(c, self.knobs)


class Tracked:
    """Wraps the landscape so that every program that runs is recorded with its noiseless value."""

    def __init__(self, land: Basins):
        self.land, self.ran = land, []
        self.knobs, self.sizes, self.start, self.opt = land.knobs, land.sizes, land.start, land.opt

    def value(self, c) -> float:
        v = self.land.value(c)
        self.ran.append(v)
        return v


def greedy(land: Basins, n: int, seed: int) -> list[float]:
    t = Tracked(land)
    loop(t, Random(t), n, seed)
    return t.ran[:n]


def random_search(land: Basins, n: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return [land.value(tuple(int(rng.integers(s)) for s in land.sizes)) for _ in range(n)]


def tpe(land: Basins, n: int, seed: int) -> list[float]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = np.random.default_rng(seed)
    ran: list[float] = []

    def objective(trial):
        c = tuple(trial.suggest_categorical(k.name, list(range(s))) for k, s in zip(land.knobs, land.sizes))
        v = land.value(c)
        ran.append(v)
        return v + rng.normal(0.0, simulated.NOISE)

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial({k.name: p for k, p in zip(land.knobs, land.start)})  # train.py as shipped, as the loop
    study.optimize(objective, n_trials=n)
    return ran


def population(land: Basins, n: int, seed: int, exploit: float = 0.3) -> list[float]:
    rng = np.random.default_rng(seed)
    depth, width = 0, 1  # the catalog's first two knobs
    elites: dict[tuple, tuple[float, tuple]] = {}  # niche -> (best measurement, program)
    ran: list[float] = []

    def run(c):
        v = land.value(c)
        ran.append(v)
        m = v + rng.normal(0.0, simulated.NOISE)
        niche = (c[depth] // 2, c[width] // 2)
        if niche not in elites or m < elites[niche][0]:
            elites[niche] = (m, c)

    run(land.start)
    while len(ran) < n:
        if rng.random() < exploit:
            parent = min(elites.values())[1]
        else:
            parent = list(elites.values())[int(rng.integers(len(elites)))][1]
        child, _ = Random(land).propose(parent, rng)
        run(tuple(int(x) for x in child))
    return ran


METHODS = {"greedy": greedy, "random": random_search, "tpe": tpe, "population": population}


def first(ran: list[float]) -> int | None:
    return next((i + 1 for i, v in enumerate(ran) if v < REACHED), None)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--experiments", type=int, default=150)
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--exploit", type=float, default=0.3, help="population: the best elite's share of parents")
    a = ap.parse_args(argv)
    land, n = Basins(), a.experiments
    print(f"synthetic-basins: start {land.value(land.start):.4f} (basin {simulated.basin(land.start, land.knobs)}), "
          f"best basin reached below {REACHED:.3f}; {n} runs, {a.seeds} seeds (0..{a.seeds - 1})\n")
    print(f"| method | seeds reaching the best basin within {n // 2} runs | within {n} runs "
          f"| runs to reach it (median over seeds that did) | best noiseless val_bpb after {n} (median) "
          "| runs to reach it, per seed |")
    print("|---|---|---|---|---|---|")
    for name, fn in METHODS.items():
        kw = {"exploit": a.exploit} if name == "population" else {}
        res = [fn(land, n, s, **kw) for s in range(a.seeds)]
        at = [first(r) for r in res]
        got = [x for x in at if x is not None]
        print(f"| {name} | {sum(x <= n // 2 for x in got)}/{a.seeds} | {len(got)}/{a.seeds} "
              f"| {statistics.median(got) if got else '-'} | {statistics.median(min(r) for r in res):.4f} "
              f"| {' '.join('-' if x is None else str(x) for x in at)} |")


if __name__ == "__main__":
    main()
