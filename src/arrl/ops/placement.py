"""Placement: which CPU cores each part of a run uses, so that an experiment's compute is its own.

A wall-clock budget measures compute as much as it measures an edit: a run that shares its
cores with the policy server's prefill or a learner update trains fewer steps and looks like
a worse edit. So every experiment worker gets cores that no other worker uses (its sandbox
is confined to them, arrl.ops.cores, and its target's thread count is their number), and the
policy server (vLLM) and the learner get cores that no experiment trains on:

- `reserved`: the policy server and the learner share `reserve_cores` cores of their own;
  the workers split the rest. Everything runs at once.
- `between_runs`: too few cores to give the parts their own without starving the
  experiments. Workers still split the cores, and the policy server and the learner use
  them too, but the driver runs policy work (proposals, adapter loads) and learner updates
  only while no experiment trains (arrl.driver).
- `off`: no pinning and no scheduling; results then depend on whatever else runs. `auto`
  falls back to it, with a warning, when there are more workers than cores (and for the
  simulated backend, which trains nothing); contention is then judged only by a source's
  throughput against its own earlier runs (arrl.driver.contention).

`auto` (the default) measures nothing at launch; it applies the rule chosen by measurement
on the 2-core default (docs/BENCHMARKS.md, "Placement"): a tiny-target run trained 136 steps
on 2 cores and 76 on 1, so a reserved core would halve every experiment. Reserved is chosen
when it leaves each CPU worker at least RESERVED_MIN_SHARE of the cores between-runs would
give it (and always for GPU workers, which need a core or two of their own, not many); a run
with no local policy server or learner (a scripted, random or external policy) gives every
core to the workers.

On a cluster the plan is made for the machine `arrl launch` runs on; workers on other nodes
use the same per-worker core lists where their node has those cores (docs/OPERATIONS.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from arrl.config import resolve
from arrl.ops import cores as cores_mod

MODES = ("auto", "reserved", "between_runs", "off")
RESERVED_MIN_SHARE = 0.75  # reserved mode must leave a CPU worker this share of its between-runs cores


class PlacementError(ValueError):
    """The placement asks for more cores than exist, or parts collide; the message names the setting."""


@dataclass(frozen=True)
class Placement:
    mode: str  # reserved | between_runs | off
    cores: str  # every core the run uses
    worker_cores: tuple[str, ...]  # one core list per worker ("" = not pinned)
    policy_cores: str  # the policy server's ("" = not pinned, or no local policy server)
    learner_cores: str
    why: str

    @property
    def between_runs(self) -> bool:
        """Whether policy and learner work must wait until no experiment trains."""
        return self.mode == "between_runs"

    def threads(self, worker: int) -> int:
        """The target's thread count for a worker: its cores (0 = unpinned: decide elsewhere)."""
        return len(cores_mod.parse(self.worker_cores[worker])) if self.worker_cores[worker] else 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["worker_cores"] = list(self.worker_cores)
        return d

    def describe(self) -> str:
        """The lines `arrl launch` prints."""
        if self.mode == "off":
            return (f"placement: off ({self.why}); warning: experiments share cores with each other and with "
                    f"everything else, so their val_bpb depends on contention")
        ws = ", ".join(f"worker-{i} cores {c}" for i, c in enumerate(self.worker_cores))
        parts = f"policy server cores {self.policy_cores or '-'}, learner cores {self.learner_cores or '-'}"
        when = ("; policy and learner work runs only between training runs" if self.between_runs else "")
        return f"placement: {self.mode} ({self.why}): {ws}; {parts}{when}"


def plan(mode: str, workers: int, gpu_workers: bool, local_parts: bool, cores: str | None = None,
         reserve_cores: int | None = None,
         have: tuple[int, ...] | None = None) -> Placement:
    """The placement of `workers` experiment workers and, when `local_parts`, a policy server and a
    learner on this machine. `cores`: the cores arrl may use (None: all this process may run on);
    `reserve_cores`: reserved mode's cores for the policy server and the learner (None: arrl.config.resolve's
    rule). Raises PlacementError naming the setting that cannot be met."""
    have = tuple(have if have is not None else cores_mod.available())
    if mode not in MODES:
        raise PlacementError(f"[placement] mode: {mode!r} is not one of {', '.join(MODES)}")
    try:
        use = cores_mod.parse(cores) if cores else have
    except cores_mod.CoreError as e:
        raise PlacementError(f"[placement] cores: {e}") from None
    missing = sorted(set(use) - set(have))
    if missing:
        raise PlacementError(f"[placement] cores: {cores_mod.fmt(missing)} not available here (this process may use "
                             f"cores {cores_mod.fmt(have)})")
    n = len(use)
    if mode == "off":
        return Placement("off", cores_mod.fmt(use), ("",) * workers, "", "", "[placement] mode = 'off'")
    if workers > n and mode == "auto":
        return Placement("off", cores_mod.fmt(use), ("",) * workers, "", "",
                         f"auto: {workers} workers on {n} cores cannot each have one")
    if workers > n:
        raise PlacementError(f"[workers] count: {workers} workers need a core each and [placement] cores has {n} "
                             f"({cores_mod.fmt(use)}); use fewer workers or [placement] mode = 'off'")
    if not local_parts:
        if reserve_cores:
            raise PlacementError("[placement] reserve_cores: there is no local policy server or learner to reserve "
                                 "cores for (the policy is not kind 'vllm')")
        return _split("reserved", use, 0, workers, "no policy server or learner on this machine")
    r = resolve.reserve_cores(reserve_cores, n)
    if mode == "reserved" or reserve_cores:
        if n - r < workers:
            raise PlacementError(f"[placement] reserve_cores: {r} reserved leave {n - r} of {n} cores for "
                                 f"{workers} worker(s); reserve fewer or set [placement] mode = 'between_runs'")
        if mode == "between_runs":
            raise PlacementError("[placement] reserve_cores: between_runs mode reserves no cores; leave it unset or "
                                 "use mode = 'reserved'")
    if mode == "between_runs":
        return _split("between_runs", use, 0, workers, "set in [placement] mode")
    if mode == "reserved":
        return _split("reserved", use, r, workers, "set in [placement] mode")
    # auto
    per_reserved, per_shared = (n - r) // workers, n // workers
    if per_reserved >= 1 and (gpu_workers or per_reserved >= RESERVED_MIN_SHARE * per_shared):
        return _split("reserved", use, r, workers, f"auto: {n} cores, {r} for the policy and learner leave "
                                                   f"{per_reserved} per worker")
    return _split("between_runs", use, 0, workers, f"auto: {n} core(s); a reserved core would leave each worker "
                                                   f"{per_reserved} of {per_shared}")


def _split(mode: str, use: tuple[int, ...], r: int, workers: int, why: str) -> Placement:
    k = (len(use) - r) // workers
    ws = tuple(cores_mod.fmt(use[r + i * k: r + (i + 1) * k]) for i in range(workers))
    spare = use[r + workers * k:]  # what does not divide evenly goes to the policy and learner
    parts = cores_mod.fmt(use[:r] + spare) if r or (mode == "reserved" and spare) else cores_mod.fmt(use)
    if mode == "reserved" and not r and not spare:
        parts = ""  # no local parts: nothing to pin
    return Placement(mode, cores_mod.fmt(use), ws, parts, parts, why)
