"""Policies without a model, for tests, dry runs and baselines: a scripted one that replays
completions, and one that draws catalog edits at random."""

from __future__ import annotations

import json
import random
import threading

from arrl import target
from arrl.policy import prompt
from arrl.policy.client import Sampling
from arrl.policy.proposal import PolicyError, Proposal


class ModelFree:
    """What the policies without a model share: nothing to start, stop or pause, adapter version 0,
    and one lock around their draws (the driver proposes from a thread)."""

    name = ""

    def __init__(self):
        self.version = 0
        self._lock = threading.Lock()

    def start(self):
        return self

    def stop(self) -> None:
        pass

    def pause(self) -> bool:
        """Nothing of this policy runs on the workers' cores."""
        return False


class ScriptedPolicy(ModelFree):
    """A deterministic policy that answers with the given completions in order, cycling.

    For tests and dry runs of the loop (config `[policy] kind = "scripted"`): no model, no
    learning; each proposal is recorded like any other.
    """

    name = "scripted"

    def __init__(self, completions: list[str]):
        if not completions or not all(isinstance(c, str) for c in completions):
            raise PolicyError("scripted policy: `completions` must be a non-empty list of strings")
        super().__init__()
        self.completions = list(completions)
        self._next = 0

    def propose(self, state: prompt.PolicyState, n: int = 1, sampling: Sampling | None = None) -> list[Proposal]:
        out = []
        with self._lock:
            for _ in range(n):
                text = self.completions[self._next % len(self.completions)]
                self._next += 1
                out.append(Proposal(text=text, fmt=state.fmt, state_key=state.key, policy=self.name,
                                    adapter_version=0, prompt_version="scripted"))
        return out


class RandomCatalogPolicy(ModelFree):
    """Uniformly random catalog edits: 1..max_knobs knobs set to random allowed values.

    The random-search baseline (config `[policy] kind = "random"`), and a cheap policy for
    benchmarks of the loop. Values equal to the incumbent's are avoided where possible.
    """

    name = "random"

    def __init__(self, catalog, seed: int = 0, max_knobs: int = 2):
        if not catalog:
            raise PolicyError("random policy: the target has no catalog")
        super().__init__()
        self.catalog, self.max_knobs = tuple(catalog), max_knobs
        self._rng = random.Random(seed)

    def propose(self, state: prompt.PolicyState, n: int = 1, sampling: Sampling | None = None) -> list[Proposal]:
        current = target.catalog_values(state.source, self.catalog)
        out = []
        with self._lock:
            for _ in range(n):
                knobs = self._rng.sample(self.catalog, self._rng.randint(1, min(self.max_knobs, len(self.catalog))))
                choice = {}
                for k in knobs:
                    other = target.other_values(k, current) or list(k.values)
                    choice[k.name] = self._rng.choice(other)
                out.append(Proposal(text=json.dumps(choice), fmt="catalog", state_key=state.key, policy=self.name,
                                    adapter_version=0, prompt_version="random"))
        return out
