"""arrl's live figures as Ray metrics (Prometheus, `ray_` prefix on each node's metrics port).

Every series carries the tag `run`. Gauges that summarise the ledger are recomputed from it
(so they stay true across `--resume`), at most every 2 s and when the run stops.

    arrl_experiments{run,status}        experiments done, by status (ledger)
    arrl_experiments_in_flight{run}     experiments running now (ledger)
    arrl_best_val_bpb{run}              the incumbent's val_bpb (baseline mean before any acceptance)
    arrl_accepted{run}                  accepted edits (ledger)
    arrl_reward_bin{run,bin}            histogram of candidate rewards in noise units (ledger);
                                        bin "a..b" counts a <= reward < b (Ray's own Histogram
                                        takes positive bucket edges only, rewards are signed)
    arrl_proposals_per_second{run}      the policy's throughput on its last group of proposals
    arrl_policy_version{run}            the newest adapter version the learner produced (ledger)
    arrl_learner_kl{run}                KL to the base model in the last update (ledger)
    arrl_learner_clip_fraction{run}     PPO clip fraction in the last update (ledger)
    arrl_worker_busy_fraction{run,worker}  share of the worker's life spent running experiments

Metric objects are made lazily; where Ray's metrics cannot be used (no Ray in this
process) every call is a no-op, so the loop never fails for the sake of a figure.
"""

from __future__ import annotations

import time

REWARD_EDGES = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0)


def reward_bins() -> list[tuple[str, float, float]]:
    """(label, low, high) of each reward bin; the outer bins are open-ended."""
    edges = (float("-inf"),) + REWARD_EDGES + (float("inf"),)
    return [(f"{lo:g}..{hi:g}", lo, hi) for lo, hi in zip(edges, edges[1:])]
STATUSES = ("ok", "crash", "oom", "timeout", "nan", "invalid_metric", "edit_failed", "rejected", "aborted",
            "near_duplicate")


def _make(kind: str, name: str, description: str, tag_keys: tuple, **kw):
    try:
        from ray.util import metrics as rm

        return getattr(rm, kind)(name, description=description, tag_keys=tag_keys, **kw)
    except Exception:  # noqa: BLE001 - no Ray here: figures are optional
        return None


class RunMetrics:
    """The driver's metrics for run `run`."""

    def __init__(self, run: str):
        self.tags = {"run": run}
        t = ("run",)
        self.experiments = _make("Gauge", "arrl_experiments", "experiments done, by status", ("run", "status"))
        self.in_flight = _make("Gauge", "arrl_experiments_in_flight", "experiments running now", t)
        self.best = _make("Gauge", "arrl_best_val_bpb", "the incumbent's val_bpb", t)
        self.accepted = _make("Gauge", "arrl_accepted", "accepted edits", t)
        self.reward = _make("Gauge", "arrl_reward_bin", "candidate rewards in noise units, count per bin",
                            ("run", "bin"))
        self.pps = _make("Gauge", "arrl_proposals_per_second", "policy throughput on its last group", t)
        self.version = _make("Gauge", "arrl_policy_version", "newest adapter version", t)
        self.kl = _make("Gauge", "arrl_learner_kl", "KL to the base model in the last update", t)
        self.clip = _make("Gauge", "arrl_learner_clip_fraction", "PPO clip fraction in the last update", t)
        self.last_publish = 0.0

    @staticmethod
    def _set(metric, value, tags) -> None:
        if metric is not None and value is not None:
            metric.set(float(value), tags=tags)

    def publish(self, read_gauges, best_bpb: float | None, force: bool = False) -> None:
        """Recompute the ledger gauges (at most every 2 s unless forced); `read_gauges()` reads them from the
        ledger (`Store.gauges`), only when they are due."""
        now = time.monotonic()
        if not force and now - self.last_publish < 2.0:
            return
        self.last_publish = now
        g = read_gauges()  # arrl.ledger.queries.Gauges
        counts = g.status_counts
        for status in sorted(set(STATUSES) | set(counts)):
            self._set(self.experiments, counts.get(status, 0), {**self.tags, "status": status})
        self._set(self.in_flight, g.running, self.tags)
        self._set(self.accepted, g.accepted, self.tags)
        self._set(self.best, best_bpb, self.tags)
        rewards = g.candidate_rewards
        for label, lo, hi in reward_bins():
            self._set(self.reward, sum(lo <= r < hi for r in rewards), {**self.tags, "bin": label})

        self._set(self.version, g.version, self.tags)
        if g.version:
            m = g.version_metrics
            self._set(self.kl, m.get("kl"), self.tags)
            self._set(self.clip, m.get("clip_fraction"), self.tags)

    def proposals(self, n: int, seconds: float) -> None:
        if seconds > 0:
            self._set(self.pps, n / seconds, self.tags)


class WorkerMetrics:
    """One experiment worker's busy fraction."""

    def __init__(self, run: str, worker: str):
        self.tags = {"run": run, "worker": worker}
        self.busy = _make("Gauge", "arrl_worker_busy_fraction", "share of the worker's life spent running "
                          "experiments", ("run", "worker"))

    def update(self, busy_s: float, alive_s: float) -> None:
        if self.busy is not None and alive_s > 0:
            self.busy.set(min(1.0, busy_s / alive_s), tags=self.tags)
