"""Noise estimate and the acceptance rule: is a candidate really better than the incumbent?

The baseline is run `noise_runs` times at the start; sigma is the sample standard deviation
of those val_bpb values (floored at `min_sigma`, since a few runs can agree by chance). With
`[search] pool_noise` it is the pooled standard deviation of every source that ran more than
once: the baselines and each candidate with its confirmation (a re-run with another seed), so
the estimate gains a degree of freedom with every confirmation instead of resting on the
2-3 baselines for the whole run.
One run of a candidate and the incumbent's mean differ by noise of about
sigma * sqrt(1 + 1/n_inc). A candidate is *promising* when it beats the incumbent by
margin_z times that; with confirmation on, it is re-run with another seed and *accepted*
when the mean of its two runs beats the incumbent by margin_z * sigma * sqrt(1/2 + 1/n_inc).
The incumbent's value is then the mean of its runs.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Noise:
    sigma: float  # run-to-run standard deviation of val_bpb
    runs: int  # how many runs it was estimated from
    raw: float  # the sample estimate before the floor
    dof: int = 0  # its degrees of freedom: runs minus the number of sources


def estimate(values: list[float], min_sigma: float) -> Noise:
    """Sample standard deviation of repeat runs of one source, floored at `min_sigma`."""
    return pooled([values], min_sigma)


def pooled(groups: list[list[float]], min_sigma: float) -> Noise:
    """Pooled standard deviation of repeat runs, one group per source: the squared deviations from
    each group's own mean summed over all groups, divided by the degrees of freedom (runs minus
    groups), floored at `min_sigma`. A source that ran once adds nothing; non-finite values are
    left out."""
    ss, runs, dof = 0.0, 0, 0
    for values in groups:
        vals = [v for v in values if v is not None and math.isfinite(v)]
        runs += len(vals)
        if len(vals) >= 2:
            mean = statistics.fmean(vals)
            ss += sum((v - mean) ** 2 for v in vals)
            dof += len(vals) - 1
    raw = math.sqrt(ss / dof) if dof else 0.0
    return Noise(max(raw, min_sigma), runs, raw, dof)


def margin(noise: Noise, z: float, n_candidate: int, n_incumbent: int) -> float:
    """How far below the incumbent's mean a mean of `n_candidate` runs must be."""
    return z * noise.sigma * math.sqrt(1.0 / n_candidate + 1.0 / max(n_incumbent, 1))


def promising(val_bpb: float | None, incumbent: float, noise: Noise, z: float, n_incumbent: int) -> bool:
    return val_bpb is not None and math.isfinite(val_bpb) and val_bpb < incumbent - margin(noise, z, 1, n_incumbent)


def confirmed(values: list[float], incumbent: float, noise: Noise, z: float, n_incumbent: int) -> bool:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if len(vals) != len(values) or not vals:
        return False
    return statistics.fmean(vals) < incumbent - margin(noise, z, len(vals), n_incumbent)
