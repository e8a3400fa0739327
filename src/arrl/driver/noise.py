"""Noise estimate and the acceptance rule: is a candidate really better than the incumbent?

Both are robust, so that one bad run (a run that lost its cores, a lucky seed) cannot move
them far:
- A source's value is the *median* of its runs (`centre`), not the mean.
- sigma pools every source that ran more than once (with `[search] pool_noise`: the baselines,
  each candidate with its confirmation, re-run repeats; else the baselines alone): every
  absolute difference between two runs of the same source, and sigma = the median of those
  differences divided by the value that median takes for normal noise with sigma 1 and the
  same group sizes (computed once per composition by simulation, seeded: `consistency`). This
  is the Shamos estimator, pooled within sources. A source of n runs gives n(n-1)/2
  differences and a wild run spoils only the n-1 it takes part in, so one wild run among five
  baselines moves sigma by a bounded amount (at most about 1.8x), where the standard deviation
  grows with the outlier. Where one run would spoil half the differences (a lone source of 3
  or 4 runs) the statistic is their lower 30% point instead, which one run cannot reach (as
  in Rousseeuw and Croux's Qn). It replaced the median of deviations from each source's
  median, which is unstable on five baselines (one of the five deviations is always 0): on
  seeded normal noise that was within 2x of the true sigma 73% of the time from 5 runs, the
  pairwise median is 88% (bench/sigma_estimators.py). It is floored at `min_sigma`, since a
  few runs can agree by chance. Its degrees of freedom are runs minus sources, as for the
  pooled standard deviation.
One run of a candidate and the incumbent's centre differ by noise of about
sigma * sqrt(1 + 1/n_inc), with n_inc the incumbent's effective runs (`effective_runs`: a median
of n > 2 runs is as precise as a mean of 2n/pi). A candidate is *promising* when it beats the
incumbent by margin_z times that; with confirmation on, it is re-run with another seed and
*accepted* when the centre of its runs beats the incumbent by margin_z * sigma *
sqrt(1/n + 1/n_inc).
"""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass

CALIBRATION_DRAWS = 4000  # simulated compositions behind each consistency constant


@dataclass(frozen=True)
class Noise:
    sigma: float  # run-to-run standard deviation of val_bpb
    runs: int  # how many runs it was estimated from
    raw: float  # the sample estimate before the floor
    dof: int = 0  # its degrees of freedom: runs minus the number of sources


def _finite(values) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def centre(values) -> float:
    """The robust centre of a source's runs: their median (nan for none)."""
    vals = _finite(values)
    return statistics.median(vals) if vals else float("nan")


def effective_runs(n: int) -> float:
    """How many runs' mean a median of `n` runs is as precise as (n for n <= 2; 2n/pi beyond, which is
    conservative for small n)."""
    return float(n) if n <= 2 else n * 2.0 / math.pi


def estimate(values: list[float], min_sigma: float) -> Noise:
    """Robust sigma of repeat runs of one source, floored at `min_sigma`."""
    return pooled([values], min_sigma)


def _differences(groups: list[list[float]]) -> list[float]:
    """Every |a - b| between two runs of the same source."""
    return [abs(g[i] - g[j]) for g in groups for i in range(len(g)) for j in range(i + 1, len(g))]


def _ranks(sizes: tuple[int, ...]) -> tuple[int, int]:
    """Which of the sorted pooled differences the statistic averages (0-based): the median's, while one
    run (which takes part in max(n) - 1 of them) spoils fewer than half; else the lower 30% point (a
    lone source of 3 or 4 runs), which one run cannot reach."""
    total = sum(n * (n - 1) // 2 for n in sizes)
    spoilt = max(sizes) - 1
    if 2 * spoilt < total:
        return (total - 1) // 2, total // 2
    k = max(1, math.ceil(0.3 * total - 1e-9))
    return k - 1, k - 1


def statistic(diffs, sizes: tuple[int, ...]):
    """The robust statistic of pooled within-source |differences|, one row per draw: `diffs` is an array
    (draws, all differences) from groups of `sizes`; the rows' `_ranks` order statistics, averaged."""
    import numpy as np

    d = np.sort(np.asarray(diffs, dtype=float), axis=1)
    lo, hi = _ranks(sizes)
    return (d[:, lo] + d[:, hi]) / 2.0


@functools.lru_cache(maxsize=256)
def consistency(sizes: tuple[int, ...]) -> float:
    """The `statistic` for normal noise of sigma 1 and these group sizes, as the median over
    CALIBRATION_DRAWS seeded simulations: dividing by it makes the robust sigma a median-unbiased
    estimate of sigma (for large samples it tends to sqrt(2) * 0.6745)."""
    import numpy as np

    rng = np.random.default_rng(0)
    diffs = []
    for n in sorted(set(sizes)):  # all groups of one size at once: (draws, groups, n)
        x = rng.standard_normal((CALIBRATION_DRAWS, sizes.count(n), n))
        i, j = np.triu_indices(n, k=1)
        diffs.append(np.abs(x[:, :, i] - x[:, :, j]).reshape(CALIBRATION_DRAWS, -1))
    return float(np.median(statistic(np.concatenate(diffs, axis=1), sizes)))


def pooled(groups: list[list[float]], min_sigma: float) -> Noise:
    """Robust pooled sigma of repeat runs, one group per source (see the module docstring), floored at
    `min_sigma`. A source that ran once adds nothing; non-finite values are left out."""
    clean = [_finite(g) for g in groups]
    runs = sum(len(g) for g in clean)
    multi = [g for g in clean if len(g) >= 2]
    dof = sum(len(g) - 1 for g in multi)
    raw = 0.0
    if multi:
        sizes = tuple(sorted(len(g) for g in multi))
        raw = float(statistic([_differences(multi)], sizes)[0]) / consistency(sizes)
    return Noise(max(raw, min_sigma), runs, raw, dof)


def margin(noise: Noise, z: float, n_candidate: int, n_incumbent: int) -> float:
    """How far below the incumbent's centre the centre of `n_candidate` runs must be."""
    return z * noise.sigma * math.sqrt(1.0 / effective_runs(n_candidate) + 1.0 / effective_runs(max(n_incumbent, 1)))


def promising(val_bpb: float | None, incumbent: float, noise: Noise, z: float, n_incumbent: int) -> bool:
    return val_bpb is not None and math.isfinite(val_bpb) and val_bpb < incumbent - margin(noise, z, 1, n_incumbent)


def confirmed(values: list[float], incumbent: float, noise: Noise, z: float, n_incumbent: int) -> bool:
    vals = _finite(values)
    if len(vals) != len(values) or not vals:
        return False
    return centre(vals) < incumbent - margin(noise, z, len(vals), n_incumbent)


def warning(noise: Noise, sigma_max: float, baselines: Noise | None = None) -> str | None:
    """Why this sigma should not be trusted yet, or None: above what the target's runs plausibly vary
    (target.toml `sigma_max_bpb`; 0 = no check), or resting on fewer than 2 degrees of freedom.
    `baselines`: the baselines' own sigma, when `noise` pools other sources too; if it is plausible,
    the pooled sources (other configurations) vary more than the baseline, and the warning says so."""
    if sigma_max and noise.sigma > sigma_max:
        head = f"sigma {noise.sigma:.4f} is above {sigma_max:g} bpb, the most this target's runs plausibly vary"
        if baselines is not None and baselines.dof >= 2 and baselines.sigma <= sigma_max:
            return (f"{head}, while the baselines alone give {baselines.sigma:.4f}: the confirmation pairs "
                    f"pooled into it (other configurations) vary more between seeds than the baseline; "
                    f"`[search] pool_noise = false` uses the baselines alone")
        return (f"{head} (target.toml sigma_max_bpb): look for contention (arrl status shows each run's "
                f"foreign share)")
    if noise.dof < 2:
        return f"sigma rests on {noise.dof} degree(s) of freedom; it is rough until confirmations add more"
    return None
