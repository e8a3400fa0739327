"""What could a researcher that learns across runs reach on a family of targets, against search that starts cold?

The model of the loop in bench/synthetic_bound.py (its acceptance rules, noise and reward), run on the
family of simulated targets in arrl.bench.family: members share where some knobs' optima lie, and their
briefs say (in words) how large the model and the data are, which moves the other optima. Per seed, a
family is drawn and split into training members and held-out members. The perpetual methods run the
training members one after another (--train-runs runs each), then every method runs each held-out member
for --runs runs, starting from the same train.py:

  random              random search (synthetic_bound's), cold
  TPE, cold           Optuna's TPE sampler, one run per trial, cold
  TPE, warm           the same, its study first given every trial it ran on the training members
  learned, cold       synthetic_bound's idealised policy-gradient learner, from zero
  learned, warm       the same learner, carried through the training members (the perpetual researcher),
                      blind to the brief
  learned, warm+brief the same, with logits linear in the member's features (a bias, the model scale, the
                      data): an ideal reader of the brief, the most a language model's prior could add
  brief oracle        knows the family prior and reads the brief exactly, but not the member's jitter: one
                      knob, set to where the prior puts its optimum (the most a perfect reader could know)
  oracle              knows the member's optimum: one knob, set to its optimum

It prints, per method, over seeds x held-out members: the median regret (best measured val_bpb - 1.0, the
optimum) after --runs/4, --runs/2 and --runs runs, the median noiseless regret of the final pick (the
loop's incumbent; TPE's best-measured trial), and the share of cases whose pick is within --near of the
optimum. That sets the bar for the benchmark with the real policy (issue 23, item 5).

    python bench/family_bound.py --seeds 20 --train 8 --test 4 --runs 40 --train-runs 40
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from arrl.bench import family  # noqa: E402
from arrl.worker.sandbox import simulated  # noqa: E402
from synthetic_bound import Bowl, Oracle, Random, Softmax, loop  # noqa: E402

METHODS = ("random", "TPE, cold", "TPE, warm", "learned, cold", "learned, warm", "learned, warm+brief", "brief oracle",
           "oracle")


def tpe(bowl: Bowl, n: int, seed: int, history: list | None = None, noise: float = simulated.NOISE):
    """Optuna TPE for `n` trials of one run each, the first at the starting train.py. Returns (best measurement
    after each run, noiseless value of the best-measured trial, this study's trials as (positions, value))."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {k.name: optuna.distributions.CategoricalDistribution(list(range(len(k.values)))) for k in bowl.knobs}
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    for c, v in history or []:
        study.add_trial(optuna.trial.create_trial(params={k.name: p for k, p in zip(bowl.knobs, c)},
                                                  distributions=dists, value=v))
    rng = np.random.default_rng(seed)
    study.enqueue_trial({k.name: p for k, p in zip(bowl.knobs, bowl.start)})
    runs, trials = [], []
    for _ in range(n):
        t = study.ask(dists)
        c = tuple(t.params[k.name] for k in bowl.knobs)
        v = bowl.value(c) + rng.normal(0.0, noise)
        study.tell(t, v)
        runs.append(v)
        trials.append((c, v))
    pick = min(trials, key=lambda cv: cv[1])[0]
    return np.minimum.accumulate(runs), bowl.value(pick), trials


def one_seed(seed: int, a) -> dict[str, list[tuple[np.ndarray, float]]]:
    members = family.members(seed, a.train + a.test)
    train, test = members[:a.train], members[a.train:]
    sizes = Bowl().sizes
    warm = Softmax(sizes, a.lr, a.group, a.knobs, n_features=1)
    brief = Softmax(sizes, a.lr, a.group, a.knobs, n_features=3)
    history: list = []
    for i, m in enumerate(train):  # the perpetual phase
        bowl = Bowl(m)
        loop(bowl, warm, a.train_runs, 10_000 * seed + i)
        brief.x = m.features()
        loop(bowl, brief, a.train_runs, 10_000 * seed + i)
        history += tpe(bowl, a.train_runs, 10_000 * seed + i)[2]
    out: dict[str, list] = {name: [] for name in METHODS}
    for j, m in enumerate(test):
        bowl, s = Bowl(m), 10_000 * seed + 1_000 + j
        out["random"].append(loop(bowl, Random(bowl), a.runs, s))
        out["TPE, cold"].append(tpe(bowl, a.runs, s)[:2])
        out["TPE, warm"].append(tpe(bowl, a.runs, s, history)[:2])
        out["learned, cold"].append(loop(bowl, Softmax(sizes, a.lr, a.group, a.knobs), a.runs, s))
        out["learned, warm"].append(loop(bowl, copy.deepcopy(warm), a.runs, s))
        reader = copy.deepcopy(brief)
        reader.x = m.features()
        out["learned, warm+brief"].append(loop(bowl, reader, a.runs, s))
        out["brief oracle"].append(loop(bowl, Oracle(bowl, family.prior_optimum(m.scale, m.data)), a.runs, s))
        out["oracle"].append(loop(bowl, Oracle(bowl), a.runs, s))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--train", type=int, default=8, help="training members per family")
    ap.add_argument("--test", type=int, default=4, help="held-out members per family")
    ap.add_argument("--runs", type=int, default=40, help="runs on each held-out member")
    ap.add_argument("--train-runs", type=int, default=40, help="runs on each training member")
    ap.add_argument("--lr", type=float, default=1.0)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--knobs", type=int, default=1, help="knobs a learner's proposal sets (each from its softmax)")
    ap.add_argument("--near", type=float, default=0.005, help="a pick within this of the optimum is near-optimal")
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    results: dict[str, list] = {name: [] for name in METHODS}
    for seed in range(a.seeds):
        for name, res in one_seed(seed, a).items():
            results[name] += res
    cases = len(results["random"])
    marks = sorted({max(a.runs // 4, 1), max(a.runs // 2, 1), a.runs})
    print(f"{a.seeds} families x {a.test} held-out members = {cases} cases; {a.train} training members of "
          f"{a.train_runs} runs each before; {a.runs} runs per held-out member; learners: lr {a.lr}, group "
          f"{a.group}, {a.knobs} knob(s) a proposal; {time.monotonic() - t0:.0f} s\n")
    print("| method | " + " | ".join(f"regret after {m} runs (median)" for m in marks)
          + f" | pick's noiseless regret (median) | picks within {a.near} of the optimum |")
    print("|---|" + "---|" * (len(marks) + 2))
    for name, res in results.items():
        at = [statistics.median(float(best[min(m, len(best)) - 1]) - 1.0 for best, _ in res) for m in marks]
        picks = [v - 1.0 for _, v in res]
        print(f"| {name} | " + " | ".join(f"{x:.4f}" for x in at)
              + f" | {statistics.median(picks):.4f} | {sum(p <= a.near for p in picks) / len(picks):.0%} |")


if __name__ == "__main__":
    main()
