"""A family of simulated targets that share structure the way real targets do (issue 23, item 5).

Every member is the synthetic bowl (arrl.worker.sandbox.simulated: val_bpb = 1.0 + 0.1 * a sum of
squared distances from the optimum, in catalog positions, + noise) over the synthetic target's
catalog, with an optimum of its own. A member is two facts a researcher writes in a brief: how large
a model its compute affords (`scale`) and how much training data it has (`data`), each in [0, 1]
on a log axis. The family prior says where each knob's optimum lies:

  the same for every member   WARMUP, DECAY, BETA2 (what one member teaches holds for all)
  moves with the model scale  DEPTH and WIDTH grow, LEARNING_RATE falls
  moves with the data         BATCH_SIZE grows
  moves with data per param   DROPOUT: high where the data is small for the model, none where it is large

plus a jitter per member and knob (a normal of JITTER positions, rounded) that no brief reveals, so
even a reader of the brief has to search. Random search and Optuna see only the knobs; a language
model policy can read the brief (`Member.brief`), and that is the edge a benchmark on this family
can show. bench/family_bound.py models the loop on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from arrl import paths, target
from arrl.target import Knob, catalog_values
from arrl.worker.sandbox import simulated

# knob -> the optimum's catalog position for the whole family
FIXED = {"WARMUP": 3, "DECAY": 3, "BETA2": 3}
# knob -> (feature, position at feature 0, position at feature 1); the feature `ratio` is data per parameter,
# (data - scale + 1) / 2, in [0, 1]
VARYING = {"DEPTH": ("scale", 1, 6), "WIDTH": ("scale", 1, 6), "LEARNING_RATE": ("scale", 6, 1),
           "BATCH_SIZE": ("data", 1, 5), "DROPOUT": ("ratio", 3, 0)}
JITTER = 0.5  # positions: the part of a member's optimum its brief does not tell
PARAMS = (1e6, 1e9)  # the model scale's range, parameters (log axis)
TOKENS = (1e7, 1e10)  # the data's range, tokens (log axis)


@lru_cache(maxsize=1)
def base() -> target.Target:
    """The synthetic target: the family's catalog and starting train.py."""
    return target.load("synthetic", paths.targets_dir())


@dataclass(frozen=True)
class Member:
    name: str
    scale: float  # 0..1: log position of the model's size in PARAMS
    data: float  # 0..1: log position of the data's size in TOKENS
    optimum: tuple[int, ...]  # per knob of the catalog, its optimum's position

    @property
    def params(self) -> float:
        return PARAMS[0] * (PARAMS[1] / PARAMS[0]) ** self.scale

    @property
    def tokens(self) -> float:
        return TOKENS[0] * (TOKENS[1] / TOKENS[0]) ** self.data

    def features(self) -> np.ndarray:
        """What the brief says, as numbers: (1, scale, data). The ideal brief reader of bench/family_bound.py
        sees these; a language model reads them as words."""
        return np.array([1.0, self.scale, self.data])

    def value(self, positions) -> float:
        """Noiseless val_bpb of the knobs at these catalog positions."""
        return simulated.value_at(positions, base().catalog, self.optimum)

    def brief(self) -> str:
        """program.md: the member in words, as a research brief would put it. It never names an optimum."""
        size = "small" if self.scale < 1 / 3 else "medium-sized" if self.scale < 2 / 3 else "large"
        ratio = self.data - self.scale
        fit = ("little data for a model this size" if ratio < -1 / 3 else
               "plenty of data for a model this size" if ratio > 1 / 3 else "a balanced amount of data for its size")
        return (f"# Research brief: {self.name}\n\n"
                f"Goal: the lowest val_bpb. This target is simulated: val_bpb is a noisy function of the knobs at "
                f"the top of train.py.\n\n"
                f"The model is {size}: about {in_words(self.params)} parameters. It trains on about "
                f"{in_words(self.tokens)} tokens of text, {fit}.\n")


def optimum_at(name: str, scale: float, data: float) -> float:
    """Where the family prior puts knob `name`'s optimum (a catalog position, not rounded) for these facts."""
    if name in FIXED:
        return float(FIXED[name])
    feature, lo, hi = VARYING[name]
    x = {"scale": scale, "data": data, "ratio": (data - scale + 1) / 2}[feature]
    return lo + (hi - lo) * x


def prior_optimum(scale: float, data: float) -> tuple[int, ...]:
    """The optimum the family prior gives these facts, without a member's jitter: what a perfect reader of the
    brief could know."""
    return tuple(_position(k, optimum_at(k.name, scale, data)) for k in base().catalog)


def _position(k: Knob, x: float) -> int:
    return int(np.clip(round(x), 0, len(k.values) - 1))


def members(seed: int, n: int) -> list[Member]:
    """`n` members of family `seed`: scale and data uniform on their log axes, optima from the prior."""
    rng = np.random.default_rng([seed, 23])
    out = []
    for i in range(n):
        scale, data = (float(v) for v in rng.uniform(0.0, 1.0, 2))
        opt = []
        for k in base().catalog:
            centre = optimum_at(k.name, scale, data)
            jitter = 0.0 if k.name in FIXED else rng.normal(0.0, JITTER)
            opt.append(_position(k, centre + jitter))
        out.append(Member(f"family-{seed}-{i:02d}", scale, data, tuple(opt)))
    return out


def write(seed: int, n: int, held_out: int, out: Path) -> dict:
    """The members of family `seed` as target folders under `out`, and out/family.json.

    Each folder is a target for the simulated sandbox: target.toml (the synthetic target's, with this member's
    optimum per knob, which only the simulated sandbox reads), the synthetic train.py, and program.md (the
    member's brief). The last `held_out` members are held out: family.json lists them apart from the
    training members, with every member's facts and optimum, so a benchmark can train on one list and
    compare on the other.
    """
    if not 0 < held_out < n:
        raise ValueError(f"--held-out {held_out}: must be at least 1 and fewer than the {n} members")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: exists and is not empty (a family is written once, into a new folder)")
    src = base()
    ms = members(seed, n)
    for m in ms:
        d = out / m.name
        d.mkdir(parents=True)
        _, _, rest = src.train_py.read_text().split('"""', 2)  # the synthetic docstring tells its own optimum
        (d / "train.py").write_text(f'"""Family member {m.name}: never trained. The simulated sandbox reads the knobs '
                                    f'below, waits for\nthe budget and reports val_bpb. program.md is its brief."""'
                                    + rest)
        (d / "program.md").write_text(m.brief())
        (d / "target.toml").write_text(_toml(m, src))
    info = {"seed": seed, "train": [m.name for m in ms[:n - held_out]], "held_out": [m.name for m in ms[n - held_out:]],
            "members": {m.name: {"scale": m.scale, "data": m.data, "params": m.params, "tokens": m.tokens,
                                 "optimum": _values(m.optimum),
                                 "prior_optimum": _values(prior_optimum(m.scale, m.data))}
                        for m in ms}}
    (out / "family.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def _values(positions) -> dict[str, str]:
    """Catalog positions as each knob's value."""
    return {k.name: k.values[p] for k, p in zip(base().catalog, positions)}


def _toml(m: Member, src: target.Target) -> str:
    what = f"simulated family member: {in_words(m.params)} parameters, {in_words(m.tokens)} tokens"
    lines = [f"# Member {m.name} of the simulated target family (arrl.bench.family); written by `arrl bench family`.",
             f"description = {json.dumps(what)}",
             f"profile = {json.dumps(src.profile)}", f"budget_s = {src.budget_s:g}", f"grace_s = {src.grace_s:g}",
             f"memory_mb = {src.memory_mb}", f"sigma_max_bpb = {src.sigma_max_bpb:g}"]
    for k, p in zip(src.catalog, m.optimum):
        lines += ["", f"[catalog.{k.name}]", f"values = {json.dumps(list(k.values))}",
                  f"optimum = {json.dumps(k.values[p])}  # read by the simulated sandbox only; never shown to a policy"]
    return "\n".join(lines) + "\n"


def start() -> tuple[int, ...]:
    """Every member starts from the synthetic train.py's values."""
    cur = catalog_values(base().train_py.read_text(), base().catalog)
    return tuple(k.values.index(cur[k.name]) for k in base().catalog)


def catalog() -> tuple[Knob, ...]:
    return base().catalog


def in_words(x: float) -> str:
    """3e7 -> '30 million' (two significant figures at most)."""
    for unit, name in ((1e9, "billion"), (1e6, "million"), (1e3, "thousand")):
        if x >= unit:
            v = float(f"{x / unit:.2g}")
            return f"{v:g} {name}"
    return f"{x:.0f}"
