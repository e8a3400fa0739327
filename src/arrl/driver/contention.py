"""Contention: did a run get the compute its cores could give, or did something else take it?

Under a wall-clock budget a run that shares its cores trains fewer steps and scores worse,
and that says nothing about its edit. Two signs, each measured from outside the sandbox
(arrl.worker.sandbox):

- `foreign_share`: the share of the run's cores' time that other processes used while it
  trained (the kernel's busy time on those cores, /proc/stat, minus the run's own CPU time).
  It does not depend on the edit: a small model that leaves a core idle has a low CPU share
  of its own but no foreign share. Contended when it is above `max_foreign_share`.
- the same source's throughput: tokens (or steps) per second against the median of that
  source's earlier uncontended runs (a confirmation against its candidate, a baseline against
  the other baselines). Contended below `min_ratio` of it. Different sources are never compared
  on throughput: an edit may make a model faster or slower.

The thresholds were chosen by measurement (docs/BENCHMARKS.md, "Contention"): on 2 cores a
quiet tiny run's foreign share stays near zero, a run beside one CPU-burning process loses
most of its steps with a foreign share near 0.4.
A contended run is re-run (`[contention] reruns` times at most); it never feeds a reward,
the noise estimate or an acceptance. Contended again after every re-run, it is recorded with
status `contended`.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Throughput:
    """What one run got: steps, tokens, seconds of training, and its cores' foreign share."""
    steps: int | None
    tokens: int | None
    train_s: float | None
    foreign_share: float | None

    @property
    def rate(self) -> float | None:
        """Tokens per training second (steps per second where the run reported no tokens)."""
        if not self.train_s or self.train_s <= 0:
            return None
        n = self.tokens if self.tokens is not None else self.steps
        return n / self.train_s if n is not None else None


@dataclass(frozen=True)
class Rule:
    max_foreign_share: float = 0.15
    min_ratio: float = 0.8


def verdict(run: Throughput, same_source: list[Throughput], rule: Rule) -> str | None:
    """Why `run` counts as contended, or None. `same_source`: earlier uncontended runs of its source."""
    if run.foreign_share is not None and run.foreign_share > rule.max_foreign_share:
        return (f"other processes took {run.foreign_share:.0%} of its cores' time while it trained (limit "
                f"{rule.max_foreign_share:.0%})")
    rates = [r.rate for r in same_source if r.rate]
    if rates and run.rate is not None:
        ref = statistics.median(rates)
        if run.rate < rule.min_ratio * ref:
            unit = "tokens/s" if run.tokens is not None else "steps/s"
            return (f"{run.rate:.1f} {unit} is {run.rate / ref:.0%} of its source's median {ref:.1f} over "
                    f"{len(rates)} earlier run(s) (limit {rule.min_ratio:.0%})")
    return None
