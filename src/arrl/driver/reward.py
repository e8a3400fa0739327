"""Reward of one experiment: improvement over the incumbent in noise units, or a penalty.

    ok:      clip((incumbent_bpb - val_bpb) / sigma, -clip, clip) - simplicity * lines_added
    other:   the configured penalty of its status (edit_failed, rejected, near_duplicate, crash, oom,
             timeout, nan, invalid_metric, aborted, suspicious)
"""

from __future__ import annotations

import math

from arrl.config import RewardSection


def reward(status: str, val_bpb: float | None, incumbent_bpb: float, sigma: float, cfg: RewardSection,
           lines_added: int = 0) -> float:
    if status == "ok" and val_bpb is not None and math.isfinite(val_bpb):
        gain = (incumbent_bpb - val_bpb) / max(sigma, 1e-12)
        return max(-cfg.clip_sigmas, min(cfg.clip_sigmas, gain)) - cfg.simplicity * lines_added
    if status == "ok":
        status = "invalid_metric"  # ok without a finite val_bpb cannot be scored
    penalty = getattr(cfg, status, None)
    if not isinstance(penalty, float):
        raise ValueError(f"no reward rule for status {status!r}")
    return penalty
