"""What each unset ("auto") config field becomes: the one place where None turns into a value.

The loop's parts call these rules where they need a value (the worker's sandbox settings, the GPUs of
the policy server and learner, the placement's reserve, the integrity floor, the learner's batch and
threads), and `arrl config RUN` prints a run's config with them applied (`table`). Fields whose unset
word is "off" (the oracle's limits, grad_clip, mmap_mb) need no rule: None means not applied.
"""

from __future__ import annotations

import os


def auto_gpus(value: float | None, cfg) -> float:
    """[policy] / [learner] num_gpus: one GPU when the workers use GPUs, none on a CPU-only run."""
    if value is not None:
        return value
    return 1.0 if cfg.workers.gpus_per_worker > 0 else 0.0


def run_limits(workers, tgt) -> dict:
    """[workers] budget_s, grace_s, memory_mb: each the target's where unset."""
    return {"budget_s": workers.budget_s or tgt.budget_s, "grace_s": workers.grace_s or tgt.grace_s,
            "memory_mb": workers.memory_mb or tgt.memory_mb}


def worker_threads(workers, placed: int = 0, cpu_count: int | None = None) -> int:
    """[workers] threads: a thread per core the placement gave the worker, else the machine's cores shared
    among the workers."""
    return workers.threads or placed or max(1, (cpu_count or os.cpu_count() or 1) // workers.count)


def reserve_cores(value: int | None, n_cores: int) -> int:
    """[placement] reserve_cores: 1 core for the policy server and learner, 2 from 16 cores."""
    return value or (2 if n_cores >= 16 else 1)


def floor_bpb(value: float | None, profile_floor: float) -> float:
    """[integrity] floor_bpb: the data profile's floor (the entropy no model of it can beat)."""
    return value or profile_floor


def learner_threads(value: int | None, cores: int = 0) -> int:
    """[learner] threads: a thread per core of the learner's placement, else every core."""
    return value or cores or os.cpu_count() or 1


def minibatch(value: int | None, batch_size: int) -> int:
    """[learner] minibatch_size: the whole batch."""
    return value or batch_size


def table(cfg, tgt=None, cores: dict | None = None, profile_floor: float | None = None) -> dict:
    """{"section.field": value} for the unset fields that a run's config, target, placement and profile floor
    determine. `cores`, from the run's placement: {"all": the core list, "worker": a worker's core count,
    "learner": the learner's, "reserved": the policy server's and learner's in reserved mode, else 0}. What
    cannot be known from these (an image chosen on the worker's node) is left out."""
    out = {"policy.num_gpus": auto_gpus(cfg.policy.num_gpus, cfg),
           "learner.num_gpus": auto_gpus(cfg.learner.num_gpus, cfg),
           "learner.minibatch_size": minibatch(cfg.learner.minibatch_size, cfg.learner.batch_size)}
    if tgt is not None:
        out.update({f"workers.{k}": v for k, v in run_limits(cfg.workers, tgt).items()})
    if cores is not None:
        out["workers.threads"] = worker_threads(cfg.workers, cores.get("worker", 0))
        out["placement.cores"] = cores.get("all") or None
        out["placement.reserve_cores"] = cores.get("reserved") or None
        out["learner.threads"] = learner_threads(cfg.learner.threads, cores.get("learner", 0))
    if profile_floor is not None:
        out["integrity.floor_bpb"] = floor_bpb(cfg.integrity.floor_bpb, profile_floor)
    return {k: v for k, v in out.items() if v is not None}
