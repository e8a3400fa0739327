"""The sandbox settings of one experiment worker, from a run's config, its target and its placement."""

from __future__ import annotations

from arrl.config import Config, resolve
from arrl.ops.placement import Placement


def sandbox_settings(cfg: Config, tgt, place: Placement | None = None, worker: int = 0) -> dict:
    """The SandboxConfig fields of an experiment on worker `worker`: the `[workers]` settings over the
    target's, its cores from the placement and a thread per core (unless `[workers] threads` says)."""
    w = cfg.workers
    cores = place.worker_cores[worker] if place is not None else ""
    threads = resolve.worker_threads(w, place.threads(worker) if place is not None else 0)
    return {**resolve.run_limits(w, tgt), "isolation": w.isolation, "threads": threads, "cores": cores}
