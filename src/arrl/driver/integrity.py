"""Integrity guards on results: a number too good to be true is not rewarded until it is reproduced.

The code that produced a result was written by a policy rewarded for that number, so a
result is *implausible* when

  - its val_bpb is below the floor (the profile's `bpb_floor`, or `[integrity] floor_bpb`):
    no model reaches that on the corpus, so the number was forged or the metric was fooled;
  - or it improves on the incumbent by more than `max_gain_z` noise sigmas AND by more than
    `max_gain_frac` of the incumbent's val_bpb in one edit (far beyond the noise, and large).

An implausible candidate gets status `suspicious` with no reward and is re-run with
another seed in a fresh sandbox (whether or not `[search] confirm` is on). It is
*reproduced* when that run is `ok`, neither value is below the floor and the two differ by
at most `reproduce_z` * sigma * sqrt(2); it then becomes `ok`, earns its reward and may be
accepted as any candidate. A result below the floor is never reproduced (a deterministic
cheat reproduces itself). Otherwise it stays `suspicious` with the `[reward] suspicious`
penalty, and is never accepted.
"""

from __future__ import annotations

import math


def implausible(val_bpb: float | None, incumbent_bpb: float, sigma: float, floor_bpb: float, max_gain_z: float,
                max_gain_frac: float) -> str | None:
    """Why an ok result is implausible, or None when it is plausible."""
    if val_bpb is None or not math.isfinite(val_bpb):
        return None
    if val_bpb < floor_bpb:
        return f"val_bpb {val_bpb:.4f} is below the floor {floor_bpb:.4f} of the profile"
    gain = incumbent_bpb - val_bpb
    if math.isfinite(incumbent_bpb) and gain > max_gain_z * sigma and gain > max_gain_frac * incumbent_bpb:
        return (f"val_bpb {val_bpb:.4f} improves on the incumbent's {incumbent_bpb:.4f} by {gain:.4f} "
                f"({gain / max(sigma, 1e-12):.0f} sigma, {100 * gain / incumbent_bpb:.0f}%) in one edit")
    return None


def reproduced(first: float | None, second: float | None, sigma: float, floor_bpb: float, z: float) -> bool:
    """Do two runs of the same source agree, and are both above the floor?"""
    vals = (first, second)
    if any(v is None or not math.isfinite(v) or v < floor_bpb for v in vals):
        return False
    return abs(first - second) <= z * sigma * math.sqrt(2.0)
