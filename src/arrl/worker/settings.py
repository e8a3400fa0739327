"""The sandbox settings of one experiment worker, from a run's config, its target and its placement."""

from __future__ import annotations

import os

from arrl.config import Config
from arrl.ops.placement import Placement


def sandbox_settings(cfg: Config, tgt, place: Placement | None = None, worker: int = 0) -> dict:
    """The SandboxConfig fields of an experiment on worker `worker`: the `[workers]` settings over the
    target's, its cores from the placement and a thread per core (unless `[workers] threads` says)."""
    w = cfg.workers
    cores = place.worker_cores[worker] if place is not None else ""
    threads = w.threads or (place.threads(worker) if place is not None else 0) or max(1, (os.cpu_count() or 1) // w.count)
    return {"budget_s": w.budget_s or tgt.budget_s, "grace_s": w.grace_s or tgt.grace_s,
            "memory_mb": w.memory_mb or tgt.memory_mb, "isolation": w.isolation, "threads": threads, "cores": cores}
