"""The `simulated` sandbox backend: training replaced by a known function, for the loop's benchmarks.

Nothing is executed. The source's top-level knob assignments are read as text; the run
waits `budget_s` (the "training"), streams a made-up learning curve (a run whose `on_progress` answers a
reason is stopped there, status `aborted`, as the process sandbox stops one), and reports

    val_bpb = 1.0 + 0.1 * sum_k ((pos_k - opt_k) / (n_k - 1))^2 + N(0, noise)

where pos_k is the position of knob k's value in the target's catalog list, n_k the list's
length and opt_k the position of the knob's `optimum` in target.toml (a family member's,
arrl.bench.family), else round(2/3 * (n_k - 1)). A value outside the catalog, or a source that
does not parse, is a `crash`.

A target whose knobs list `basins` (targets/synthetic-basins) has local optima instead: basin b
is the same bowl centred on the b-th entry of every knob's `basins`, raised by BASIN_STEP * b,
and val_bpb is the lowest of them. The knobs interact: the best DEPTH depends on which basin the
other knobs are in, and from the centre of a worse basin no edit of one or two knobs improves. The outcome says `isolation: simulated`, so a simulated
number is never mistaken for a measured one. Used by bench/duty_cycle.py and by tests of
the loop and of learning (issue: synthetic target); never by real research runs.
"""

from __future__ import annotations

import ast
import random
import time
from pathlib import Path

from arrl.target import catalog_values
from arrl.worker.outcome import Outcome, Timings
from arrl.target import Knob

NOISE = 0.002
BASIN_STEP = 0.02  # basin b's floor lies b * BASIN_STEP above the best basin's (10 sigma of the noise)


def optimum(k: Knob) -> int:
    """The position of knob k's optimum: target.toml's `optimum` (or its best basin's centre), else two thirds
    along its values."""
    if k.basins:
        return k.values.index(k.basins[0])
    if k.optimum is not None:
        return k.values.index(k.optimum)
    return round(2 * (len(k.values) - 1) / 3)


def basin(positions, catalog: tuple[Knob, ...]) -> int | None:
    """Which basin holds the knobs at these positions (the one whose raised bowl is lowest there); None for a
    landscape of one bowl."""
    if not catalog or not catalog[0].basins:
        return None
    raised = [_bowl(positions, [k.values.index(k.basins[b]) for k in catalog], catalog) + BASIN_STEP * b
              for b in range(len(catalog[0].basins))]
    return raised.index(min(raised))


def value(source: str, catalog: tuple[Knob, ...]) -> float | str:
    """The noiseless val_bpb of `source`, or a message saying why it cannot be scored."""
    try:
        ast.parse(source)
    except SyntaxError as e:
        return f"train.py does not parse: {e}"
    assigned = catalog_values(source, catalog)
    for k in catalog:
        if assigned.get(k.name) not in k.values:
            return f"{k.name} = {assigned.get(k.name)!r} is not one of the simulated values"
    return value_at([k.values.index(assigned[k.name]) for k in catalog], catalog)


def value_at(positions, catalog: tuple[Knob, ...], optima=None) -> float:
    """The noiseless val_bpb of the knobs at these positions in their catalog lists (one per knob), with the
    bowl's minimum at `optima` (positions, one per knob; by default each knob's `optimum`, or the lowest basin
    of a target with `basins`)."""
    if optima is None and catalog and catalog[0].basins:
        return 1.0 + min(_bowl(positions, [k.values.index(k.basins[b]) for k in catalog], catalog) + BASIN_STEP * b
                         for b in range(len(catalog[0].basins)))
    optima = optima if optima is not None else [optimum(k) for k in catalog]
    return 1.0 + _bowl(positions, optima, catalog)


def _bowl(positions, centre, catalog: tuple[Knob, ...]) -> float:
    return 0.1 * sum(((p - o) / max(len(k.values) - 1, 1)) ** 2 for p, o, k in zip(positions, centre, catalog))


def test_value(source: str, catalog: tuple[Knob, ...], seed: int, noise: float = NOISE) -> dict:
    """The sealed test split's score of a simulated run: the same function with noise of its own (the
    simulated target does not overfit)."""
    v = value(source, catalog)
    if isinstance(v, str):
        return {"status": "invalid_metric", "message": v}
    return {"status": "ok", "test_bpb": v + random.Random(f"test:{seed}:{source}").gauss(0.0, noise), "split": "test"}


class SimulatedSandbox:
    isolation = "simulated"

    def __init__(self, catalog: tuple[Knob, ...], budget_s: float, noise: float = NOISE):
        self.catalog, self.budget_s, self.noise = catalog, budget_s, noise

    def close(self) -> None:
        pass

    def sweep(self) -> int:
        return 0

    def run(self, source: str, run_dir: Path, seed: int = 0, env_hash: str = "", on_progress=None) -> Outcome:
        t0 = time.monotonic()
        v = value(source, self.catalog)
        if isinstance(v, str):
            return Outcome("crash", message=v, isolation=self.isolation, env_hash=env_hash,
                           timings=Timings(wall_s=time.monotonic() - t0))
        rng = random.Random(f"{seed}:{source}")
        curve = []
        steps = 10
        for i in range(1, steps + 1):
            time.sleep(self.budget_s / steps)
            elapsed = time.monotonic() - t0
            curve.append((elapsed, i * 10, v + 2.0 / i))
            why = on_progress(curve) if on_progress is not None else None
            if why:  # stopped (early abort, ASHA), as the process sandbox stops: no evaluation, no val_bpb
                return Outcome("aborted", message=f"aborted by self-evaluation: {why}", isolation=self.isolation,
                               env_hash=env_hash, timings=Timings(setup_s=0.0, train_s=elapsed, eval_s=0.0,
                                                                  wall_s=elapsed), steps=i * 10, curve=tuple(curve))
        wall = time.monotonic() - t0
        return Outcome("ok", val_bpb=v + rng.gauss(0.0, self.noise), isolation=self.isolation, env_hash=env_hash,
                       timings=Timings(setup_s=0.0, train_s=wall, eval_s=0.0, wall_s=wall), steps=steps * 10,
                       curve=tuple(curve))
