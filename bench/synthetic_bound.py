"""What could any policy reach on the synthetic target, in this loop, within N runs?

A model of the loop on the synthetic bowl (arrl.worker.sandbox.simulated's function and noise, the
target's catalog and start values), with no Ray, vLLM or learner, so 200 seeds of a
policy take about a minute. It follows the loop's rules as docs/LOOP.md states them: 2 baseline runs; a
new edit runs once, is confirmed by a second run when it beats the incumbent by the
one-run margin, and is accepted when the two runs' mean beats it by the two-run margin;
sigma pooled over every source that ran more than once (floored at 0.002); a repeat of an
unaccepted source whose runs beat the incumbent runs again, up to `--rerun` runs, and is
judged on its mean; other repeats and empty edits are not runs. Every run counts, as in
the research table, and "best" is the lowest single measurement, as there.

Policies (classes below; bench/family_bound.py runs the same loop on a family of targets):
  random    the random-search baseline: 1-2 knobs, each set to a uniformly drawn other value
  oracle    knows each knob's optimum: one knob, set to its optimum
  learned   one knob (or --knobs of them) uniformly, each value from a softmax over the
            knob's values; after every group of --group proposals the softmax logits take
            one exact REINFORCE step (group-relative advantages of the loop's reward, the
            gain over the incumbent in sigmas clipped at +-5), learning rate --lr. This is
            an idealised learner of the same kind as the RL loop's (a policy gradient over
            the same choices), without a language model in between.

    python bench/synthetic_bound.py --seeds 200 --lr 0.5 1.0 --group 4 8

prints, per policy, the median (over seeds) of the best measurement after N/2 and N runs,
the noiseless value of the final incumbent, and how many seeds reach random search's
median final best within N/2 runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from arrl.bench import family
from arrl.driver import noise as acceptance
from arrl.worker.sandbox import simulated
from arrl.config import RewardSection  # noqa: E402
from arrl.driver.reward import reward


class Bowl:
    """The synthetic bowl, or a member of the family (arrl.bench.family) with its own optimum."""

    def __init__(self, member=None):
        self.knobs = family.catalog()
        self.sizes = [len(k.values) for k in self.knobs]
        self.opt = list(member.optimum) if member is not None else [simulated.optimum(k) for k in self.knobs]
        self.start = family.start()

    def value(self, c) -> float:
        return simulated.value_at(c, self.knobs, self.opt)


class Random:
    """The random-search baseline: 1-2 knobs, each set to a uniformly drawn other value."""
    group = 8

    def __init__(self, bowl: Bowl):
        self.sizes = bowl.sizes

    def propose(self, inc, rng):
        c = list(inc)
        chosen = rng.choice(len(c), size=rng.integers(1, 3), replace=False)
        for k in chosen:
            c[k] = rng.choice([v for v in range(self.sizes[k]) if v != inc[k]])
        return tuple(c), chosen

    def learn(self, taken, rewards):
        pass


class Oracle(Random):
    """Knows each knob's optimum (the bowl's, or `opt`): one knob, set to its optimum."""

    def __init__(self, bowl: Bowl, opt=None):
        super().__init__(bowl)
        self.opt = list(opt) if opt is not None else bowl.opt

    def propose(self, inc, rng):
        c, k = list(inc), int(rng.integers(len(inc)))
        c[k] = self.opt[k]
        return tuple(c), [k]


class Softmax:
    """The idealised learner: `knobs` knobs uniformly, each value from a softmax whose logits are W[k] @ x.
    x is the member's features (arrl.bench.family.Member.features: a bias, the model scale, the data) for a
    learner that reads the brief, else (1,). After every group the weights take one exact REINFORCE step
    (group-relative advantages of the loop's reward), learning rate `lr`. Its weights carry over from one
    member to the next when the same object runs several (the perpetual researcher)."""

    def __init__(self, sizes, lr: float = 1.0, group: int = 8, knobs: int = 1, n_features: int = 1):
        self.W = [np.zeros((s, n_features)) for s in sizes]
        self.x = np.ones(n_features)
        self.lr, self.group, self.knobs = lr, group, knobs

    def probs(self, k: int) -> np.ndarray:
        z = self.W[k] @ self.x
        p = np.exp(z - z.max())
        return p / p.sum()

    def propose(self, inc, rng):
        c = list(inc)
        chosen = rng.choice(len(c), size=self.knobs, replace=False)
        for k in chosen:
            c[k] = rng.choice(len(self.W[k]), p=self.probs(k))
        return tuple(c), chosen

    def learn(self, taken, rewards):
        r = np.asarray(rewards)
        if len(r) < 2 or r.std() <= 1e-9:
            return
        adv = (r - r.mean()) / r.std()
        for (c, chosen), a in zip(taken, adv):
            for k in chosen:
                grad = -self.probs(k)
                grad[c[k]] += 1.0
                self.W[k] += self.lr * a * np.outer(grad, self.x)


def make(bowl: Bowl, policy: str, lr: float = 1.0, group: int = 8, knobs: int = 1):
    if policy == "random":
        return Random(bowl)
    if policy == "oracle":
        return Oracle(bowl)
    return Softmax(bowl.sizes, lr, group, knobs)


def loop(bowl: Bowl, policy, n: int, seed: int, z: float = 2.0, rerun: int = 4, noise: float = simulated.NOISE,
         min_sigma: float = 0.002, **kw):
    """(best measurement after each run, noiseless value of the final incumbent) of one seed. `policy` is a
    name ("random", "oracle", "learned" with `kw` lr, group, knobs) or an object with propose and learn."""
    if isinstance(policy, str):
        policy = make(bowl, policy, **kw)
    rng = np.random.default_rng(seed)
    rcfg = RewardSection()
    runs: list[float] = []
    meas: dict[tuple, list[float]] = {}

    def run(c):
        v = bowl.value(c) + rng.normal(0.0, noise)
        runs.append(v)
        meas.setdefault(c, []).append(v)
        return v

    inc = bowl.start
    inc_v = [run(inc), run(inc)]
    accepted = {inc}
    idle = 0
    while len(runs) < n and idle < 2000:  # 2000 proposals in a row that ran nothing: the policy is stuck
        props = [policy.propose(inc, rng) for _ in range(policy.group)]
        rewards, taken = [], []
        for c, chosen in props:
            if len(runs) >= n:
                break
            noise_est = acceptance.pooled(list(meas.values()), min_sigma)
            n_inc, m_inc = len(inc_v), statistics.fmean(inc_v)
            if c == inc:  # an empty edit
                idle += 1
                rewards.append(rcfg.edit_failed)
                taken.append((c, chosen))
                continue
            if c in meas:  # a repeat: runs again only under the re-run rule, else answered from the ledger
                vs = meas[c]
                if c not in accepted and len(vs) < rerun and statistics.fmean(vs) < m_inc:
                    idle = 0
                    run(c)
                    if acceptance.confirmed(vs, m_inc, noise_est, z, n_inc):
                        inc, inc_v = c, list(vs)
                        accepted.add(c)
                else:
                    idle += 1
                v = statistics.fmean(meas[c])
            else:
                idle = 0
                v = run(c)
                if acceptance.promising(v, m_inc, noise_est, z, n_inc) and len(runs) < n:
                    pair = [v, run(c)]
                    if acceptance.confirmed(pair, m_inc, noise_est, z, n_inc):
                        inc, inc_v = c, pair
                        accepted.add(c)
            rewards.append(reward("ok", v, m_inc, noise_est.sigma, rcfg))
            taken.append((c, chosen))
        policy.learn(taken, rewards)
    best = np.minimum.accumulate(runs)
    return best, bowl.value(inc)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--experiments", type=int, default=150)
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--lr", type=float, nargs="+", default=[0.5, 1.0])
    ap.add_argument("--group", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--knobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rerun", type=int, default=4)
    a = ap.parse_args(argv)
    bowl, n, half = Bowl(), a.experiments, a.experiments // 2
    rows = [("random", {}), ("oracle", {})]
    rows += [("learned", dict(lr=lr, group=g, knobs=k)) for lr in a.lr for g in a.group for k in a.knobs]
    results = {}
    for name, kw in rows:
        res = [loop(bowl, name, n, s, rerun=a.rerun, **kw) for s in range(a.seeds)]
        results[(name, tuple(kw.items()))] = res
    bar = statistics.median(r[0][-1] for r in results[("random", ())])
    print(f"{a.seeds} seeds, {n} runs; the bar (random search's median best after {n} runs): {bar:.4f}\n")
    print(f"| policy | best after {half} runs (median) | best after {n} | noiseless incumbent after {n} "
          f"| seeds reaching the bar within {half} runs |")
    print("|---|---|---|---|---|")
    for (name, kw), res in results.items():
        label = name + (" (" + ", ".join(f"{k} {v}" for k, v in kw) + ")" if kw else "")
        at = [r[0][min(half, len(r[0])) - 1] for r in res]
        print(f"| {label} | {statistics.median(at):.4f} | {statistics.median(r[0][-1] for r in res):.4f} "
              f"| {statistics.median(r[1] for r in res):.4f} | {sum(x <= bar for x in at) / len(res):.0%} |")


if __name__ == "__main__":
    main()
