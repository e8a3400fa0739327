"""Fast failures and an asynchronous learner: what the batch rule does to learning (issue 23, item 4).

A model of the loop's timing with no Ray, vLLM or learner. A policy is a softmax over `--arms` choices.
Some choices crash: their runs come back after `--fail` of the budget with reward -1, as a crash or an
out-of-memory does within seconds. The others train the whole budget and earn their quality plus noise of
one sigma (the loop's reward is a gain in noise sigmas). The qualities are spread evenly from +1.5 down to
-0.5. `--workers` workers take proposals from a queue; when the queue holds fewer proposals than there
are workers, the policy makes a request of `--group` proposals from its current logits, as the driver
does. Proposals of an adapter the learner has replaced are dropped from the queue. When the learner is idle and the
batch rule finds `--batch` samples, it takes `--update` of a budget and then serves new logits. The
update is one exact REINFORCE step, with group-relative advantages (reward minus the group mean, over the
group's std) normalised over the batch, as arrl's learner computes them. Samples more than
`--staleness` versions old are dropped.

Batch rules (arrl.driver.learning.Learning.ready_samples):
  arrival  the oldest finished results, up to the batch size (the rule before issue 23): a request's
           crashes finish first and fill batches on their own, compared only with each other
  whole    whole requests: a result waits until its request's other proposals have finished
           (`[learner] whole_groups`, the default)

    python bench/async_bound.py                      # 5 of 8 choices crash, lr 0.5, 2/4/8/16 workers
    python bench/async_bound.py --crashes 3 --lr 2.0

prints, per worker count and rule, over every seed: the mean reward of all runs, the crash share of the
last quarter's proposals and their mean reward, the best choice's probability at the end, the mean
advantage the crashes were given and the share of crashes given 0 (within 1e-9: no signal), the updates made, the
samples dropped as stale and the runs made; and in how many seeds whole groups beat arrival order.
"""

from __future__ import annotations

import argparse
import heapq
import statistics

import numpy as np

from arrl.learner import advantages

RULES = ("arrival", "whole")


def arms(n: int, crashes: int) -> list[float | None]:
    """Each choice's quality in reward units, or None for a choice that crashes."""
    ok = n - crashes
    q = np.linspace(1.5, -0.5, ok).tolist() if ok > 1 else [1.0]
    return q + [None] * crashes


def group_advantages(rewards: np.ndarray, groups: list[int]) -> np.ndarray:
    """The learner's default advantages (arrl.learner.learner: group-relative, then normalised over the batch)."""
    return advantages.normalise(advantages.group_relative(rewards, groups))


def run(rule: str, seed: int, a, workers: int) -> dict:
    rng = np.random.default_rng(seed)
    quality = arms(a.arms, a.crashes)
    logits = np.zeros(a.arms)
    version, request = 0, 0
    queue: list[tuple[int, int, int]] = []  # (choice, request, version)
    done: list[dict] = []  # finished, not yet consumed, in order of the experiment's id
    running: dict[int, int] = {}  # request -> its proposals queued or training
    events: list[tuple[float, int, dict]] = []  # (finish time, exp id, sample)
    free, now, exp_id = workers, 0.0, 0
    update_at: float | None = None
    batch: list[dict] = []
    proposed: list[tuple[float, int]] = []  # (time, choice) of every proposal that ran
    crash_adv: list[float] = []
    updates = dropped = 0
    def ask() -> None:  # one request of `group` proposals from the current logits
        nonlocal request
        p = np.exp(logits - logits.max())
        p /= p.sum()
        for c in rng.choice(a.arms, size=a.group, p=p):
            queue.append((int(c), request, version))
        running[request] = a.group
        request += 1

    while now < a.budgets:
        if len(queue) < workers:  # the driver asks for the next request when its queue runs low
            ask()
        while free:
            if not queue:  # every queued proposal was stale
                ask()
            c, req, v = queue.pop(0)
            if v < version:  # made by an adapter the server no longer serves
                running[req] -= 1
                continue
            free -= 1
            exp_id += 1
            q = quality[c]
            took, r = (a.fail, -1.0) if q is None else (1.0, q + rng.normal())
            proposed.append((now, c))
            heapq.heappush(events, (now + took, exp_id, {"id": exp_id, "c": c, "req": req, "v": v, "r": r}))
        if update_at is None:  # the learner is idle: is a batch ready?
            floor = version - a.staleness
            dropped += sum(s["v"] < floor for s in done)
            done = [s for s in done if s["v"] >= floor]
            ready = [s for s in done if rule == "arrival" or not running.get(s["req"])]
            if rule == "whole":  # whole requests, oldest first, until the batch size is reached
                by_request: dict[int, list[dict]] = {}
                for s in ready:
                    by_request.setdefault(s["req"], []).append(s)
                ready = []
                for members in by_request.values():
                    ready += members
                    if len(ready) >= a.batch:
                        break
            else:
                ready = ready[:a.batch]
            if len(ready) >= a.batch:
                batch, update_at = ready, now + a.update
                ids = {s["id"] for s in batch}
                done = [s for s in done if s["id"] not in ids]
        nxt = min(events[0][0] if events else np.inf, update_at if update_at is not None else np.inf)
        if nxt == np.inf:
            break
        now = nxt
        if update_at is not None and update_at <= now:
            r = np.array([s["r"] for s in batch])
            adv = group_advantages(r, [s["req"] for s in batch])
            p = np.exp(logits - logits.max())
            p /= p.sum()
            grad = np.zeros(a.arms)
            for s, g in zip(batch, adv):
                onehot = np.zeros(a.arms)
                onehot[s["c"]] = 1.0
                grad += g * (onehot - p)
                if quality[s["c"]] is None:
                    crash_adv.append(float(g))
            logits += a.lr * grad / len(batch)
            version, updates, update_at = version + 1, updates + 1, None
        while events and events[0][0] <= now:
            _, _, s = heapq.heappop(events)
            free += 1
            running[s["req"]] -= 1
            done.append(s)
            done.sort(key=lambda x: x["id"])
    late = [c for t, c in proposed if t >= 0.75 * a.budgets]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    rewards = [-1.0 if quality[c] is None else quality[c] for _, c in proposed]
    return {"mean_reward": statistics.fmean(rewards) if rewards else 0.0,
            "crash_share": sum(quality[c] is None for c in late) / max(len(late), 1),
            "late_reward": statistics.fmean(-1.0 if quality[c] is None else quality[c] for c in late) if late else 0.0,
            "p_best": float(p[0]), "crash_adv": statistics.fmean(crash_adv) if crash_adv else float("nan"),
            "crash_zero": sum(abs(g) < 1e-9 for g in crash_adv) / max(len(crash_adv), 1), "updates": updates,
            "dropped": dropped, "runs": len(proposed)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--budgets", type=float, default=60.0, help="run length, in training budgets")
    ap.add_argument("--arms", type=int, default=8)
    ap.add_argument("--crashes", type=int, default=5, help="choices that crash")
    ap.add_argument("--fail", type=float, default=0.1, help="a crash's duration, as a share of the budget")
    ap.add_argument("--workers", type=int, nargs="+", default=[2, 4, 8, 16], help="worker counts, one table row each")
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--update", type=float, default=0.5, help="an update's duration, in budgets")
    ap.add_argument("--staleness", type=int, default=1)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--per-seed", action="store_true", help="also print every seed's row")
    a = ap.parse_args()
    print(f"# {a.arms} choices, {a.crashes} crash after {a.fail} of a budget; groups of {a.group}, batches of "
          f"{a.batch}, updates of {a.update} budget, staleness {a.staleness}, lr {a.lr}, {a.budgets:g} budgets, "
          f"{a.seeds} seeds (0..{a.seeds - 1}); cells: median [25th, 75th percentile] over every seed")
    keys = ("mean_reward", "crash_share", "late_reward", "p_best", "crash_adv", "crash_zero", "updates", "dropped",
            "runs")
    print("workers rule    " + " ".join(f"{k:>18}" for k in keys) + "  whole better (mean reward, late reward)")
    for workers in a.workers:
        rows = {rule: [run(rule, s, a, workers) for s in range(a.seeds)] for rule in RULES}
        for rule in RULES:
            cells = []
            for k in keys:
                v = np.array([r[k] for r in rows[rule]], dtype=float)
                v = v[~np.isnan(v)]
                q = np.percentile(v, [50, 25, 75]) if len(v) else [float("nan")] * 3
                cells.append(f"{q[0]:>6.2f} [{q[1]:.2f},{q[2]:.2f}]".rjust(18))
            wins = ""
            if rule == "whole":
                w = [sum(x[k] > y[k] for x, y in zip(rows["whole"], rows["arrival"])) for k in ("mean_reward",
                                                                                              "late_reward")]
                wins = f"  {w[0]} and {w[1]} of {a.seeds} seeds"
            print(f"{workers:>7} {rule:<7} " + " ".join(cells) + wins)
        if a.per_seed:
            for rule in RULES:
                for s, r in enumerate(rows[rule]):
                    print(f"  seed {s:>3} {rule:<7} " + " ".join(f"{k} {r[k]:.3f}" for k in keys))


if __name__ == "__main__":
    main()
