"""The termination oracle: when a run stops, and why (the reason is recorded in the ledger)."""

from __future__ import annotations

from dataclasses import dataclass

from arrl.config import OracleSection


@dataclass(frozen=True)
class Progress:
    experiments: int  # counted experiments (candidates and confirmations, not baselines)
    since_accept: int  # counted experiments since the last acceptance (or the start)
    wall_s: float  # driver wall time over all sessions of the run
    gpu_hours: float  # worker-seconds spent in sandboxes / 3600, times GPUs per worker
    incumbent_bpb: float | None
    stop_requested: bool = False
    failed_edits_in_a_row: int = 0  # candidates since the last one that ran (failed, rejected; duplicates too
                                    # without count_duplicates)


def check(p: Progress, cfg: OracleSection) -> str | None:
    """The reason to stop now, or None."""
    if p.stop_requested:
        return "stop requested"
    if cfg.target_bpb and p.incumbent_bpb is not None and p.incumbent_bpb <= cfg.target_bpb:
        return f"target val_bpb {cfg.target_bpb:g} reached ({p.incumbent_bpb:.4f})"
    if cfg.max_experiments and p.experiments >= cfg.max_experiments:
        return f"experiment budget reached ({p.experiments})"
    if cfg.max_wall_s and p.wall_s >= cfg.max_wall_s:
        return f"wall-clock budget reached ({p.wall_s:.0f} s)"
    if cfg.max_gpu_hours and p.gpu_hours >= cfg.max_gpu_hours:
        return f"GPU-hour budget reached ({p.gpu_hours:.2f} h)"
    if cfg.max_failed_edits and p.failed_edits_in_a_row >= cfg.max_failed_edits:
        return f"the policy's last {p.failed_edits_in_a_row} edits all failed, were rejected or trained nothing"
    if cfg.plateau and p.since_accept >= cfg.plateau:
        return f"plateau: no acceptance in {p.since_accept} experiments"
    return None
