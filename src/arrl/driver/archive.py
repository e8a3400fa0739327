"""The archive of programs for `[search] strategy = "population"`: every program that trained, on islands and
in niches, and the elites that parents are drawn from.

A program is a normalised source (its `norm_sha`). The ledger's `archive` table holds one row per program and
island, written in the transaction that records the program's first `ok` run. A migration writes rows too, with
the `migrations` counter in meta, in the same transaction. The start program is on every island once every
baseline is in. Everything else is derived from the ledger. So a
driver killed at any moment and resumed sees the same archive, the same elites and the same parents.

- **Values.** A program's values are the val_bpb of its `ok` runs that trained. The start program's values are
  the baselines.
- **Descriptors** (`[search] niches`), one bucket each; the niche is the tuple of buckets:
  - `size`: log2 of the saved model's bytes;
  - `speed`: log2 of the training tokens per second;
  - `knob:NAME`: the position of a catalog knob's value, halved.
  A descriptor that a run cannot give (the simulated sandbox saves no model and counts no tokens) is None, a
  bucket of its own. It is recorded, never an error.
- **Elites.** A program is confirmed within noise once two of its runs agree (arrl.driver.integrity.reproduced
  at `[integrity] reproduce_z`); the start program is confirmed by its baselines. A niche's elite on an island
  is its confirmed program with the lowest centre. A program with one run is in the archive but is not an
  elite until its confirmation run agrees.
- **Which runs earn a confirmation** (`[search] confirm_elites`): `niche`, a run that beats its niche's elite or
  opens a niche; `best`, only a run that would be its island's best elite (or beats the incumbent). With `best`
  a niche without an elite is represented by its unconfirmed single-run program with the lowest value: an
  exploring request may draw it as a parent, but it is no elite (never migrated, committed, exploited or shown
  as an inspiration), so a lucky run can steer exploration and nothing more.
- **Parents.** Each request goes to the island whose parents have had the fewest candidates (ties: request
  number mod islands). With probability `exploit` the parent is the island's best elite, else a niche's
  representative (its elite, or with `best` the program above) drawn uniformly. The inspirations are the
  island's other best elites.
- **Migration.** Each time `migrate_every` more programs have trained, every island's best elite joins the next
  island (a ring). Only elites move, so a value that was not confirmed is never copied.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from arrl import target as target_mod
from arrl.config import ConfigError
from arrl.driver import integrity, noise

DESCRIPTORS = ("size", "speed")  # and knob:NAME for a catalog knob


def check_niches(names: list, catalog) -> None:
    """ConfigError (one line) for a descriptor name this target cannot have."""
    knobs = {k.name for k in catalog}
    for n in names:
        if n in DESCRIPTORS:
            continue
        if isinstance(n, str) and n.startswith("knob:"):
            if n[5:] in knobs:
                continue
            raise ConfigError(f"[search] niches: {n!r} names no knob of the target's catalog "
                              f"(knobs: {', '.join(sorted(knobs)) or 'none'})")
        raise ConfigError(f"[search] niches: unknown descriptor {n!r} (known: size, speed, knob:NAME)")


def _log2(x) -> int | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return round(math.log2(x)) if math.isfinite(x) and x > 0 else None


def descriptors(names: list, catalog, source: str, outcome: dict) -> dict:
    """The descriptor buckets of one run: None where the run cannot give one."""
    out = {}
    for n in names:
        if n == "size":
            out[n] = _log2(outcome.get("model_bytes"))
        elif n == "speed":
            t = (outcome.get("timings") or {}).get("train_s")
            out[n] = _log2(outcome["tokens"] / t) if outcome.get("tokens") and t else None
        else:
            knob = next(k for k in catalog if k.name == n[5:])
            v = target_mod.catalog_values(source, (knob,)).get(knob.name)
            out[n] = knob.values.index(v) // 2 if v in knob.values else None
    return out


@dataclass(frozen=True)
class Program:
    exp_id: int  # its first run (the first baseline for the start program)
    norm: str
    island: int
    niche: tuple
    values: tuple  # val_bpb of its ok runs
    confirmed: bool
    via: str  # start | trained | migrated

    @property
    def value(self) -> float:
        return noise.centre(self.values)


def _elites_of(progs: list[Program]) -> dict[tuple, Program]:
    """Each niche's confirmed program with the lowest centre."""
    out: dict[tuple, Program] = {}
    for p in progs:
        if p.confirmed and (p.niche not in out or p.value < out[p.niche].value):
            out[p.niche] = p
    return out


class Archive:
    def __init__(self, store, search, catalog, floor: float, reproduce_z: float, log=print):
        self.store, self.catalog, self.floor, self.z, self.log = store, tuple(catalog), floor, reproduce_z, log
        self.islands, self.exploit = search.islands, search.exploit
        self.inspirations, self.every = search.inspirations, search.migrate_every
        self.niches, self.confirm = list(search.niches), search.confirm_elites
        check_niches(self.niches, self.catalog)
        self.missing: set[int] = set()  # parents whose train.py is gone (logged once each)

    # -- writing (inside the transaction that records the run) ----------------------------------------------
    def add_run(self, row, source: str, outcome: dict, sigma: float) -> list[tuple]:
        """An `ok` run joins its island (once per program); then the migrations that are due. Returns the
        migrations made: (program's exp id, from island, to island)."""
        if row["island"] is None:
            return []
        d = descriptors(self.niches, self.catalog, source, outcome)
        self.store.add_program(row["norm_sha"], row["island"], row["id"], [d[n] for n in self.niches], d, "trained")
        return self._migrate(sigma)

    def _migrate(self, sigma: float) -> list[tuple]:
        if not self.every or self.islands < 2:
            return []
        trained = sum(1 for r in self.store.programs() if r["via"] == "trained")
        done, moved = int(self.store.get("migrations", 0) or 0), []
        while done < trained // self.every:
            bests = [self.best(i, sigma) for i in range(self.islands)]  # taken before any moves
            for i, b in enumerate(bests):
                to = (i + 1) % self.islands
                if b is not None and b.via != "start" and self.store.add_program(b.norm, to, b.exp_id, list(b.niche),
                                                            dict(zip(self.niches, b.niche)), "migrated"):
                    moved.append((b.exp_id, i, to))
            done += 1
            self.store.put("migrations", done)
            self.store.event("migration", number=done, moved=moved)
        return moved

    # -- reading -------------------------------------------------------------------------------------------
    def summary(self, sigma: float) -> str:
        """One line per island: programs, elites, the best elite."""
        out = []
        for i in range(self.islands):
            progs, b = self.programs(i, sigma), self.best(i, sigma)
            best = f", best exp {b.exp_id} at {b.value:.4f} ({len(b.values)} runs)" if b else ""
            out.append(f"island {i}: {len(progs)} programs, {len(self.elites(i, sigma))} elites{best}")
        return "; ".join(out)

    def _values(self, r) -> list[float]:
        runs = [x for x in self.store.trained_runs_of(r["norm_sha"]) if x["status"] == "ok"]
        vals = [x["val_bpb"] for x in runs]
        if r["via"] == "start" or self.store.experiment(r["exp_id"])["kind"] == "baseline":
            vals = [x["val_bpb"] for x in self.store.baselines(done=True, ok=True)] + vals
        return [v for v in vals if v is not None]

    def _program(self, r, sigma: float) -> Program:
        vals = self._values(r)
        start = r["via"] == "start"
        ok = start or (len(vals) >= 2 and integrity.reproduced(vals[0], vals[1], sigma, self.floor, self.z))
        return Program(r["exp_id"], r["norm_sha"], r["island"], tuple(json.loads(r["niche"])), tuple(vals),
                       bool(ok and vals), r["via"])

    def _start(self) -> dict | None:
        """The start program's row: on every island from the moment every baseline is in (derived, not stored),
        with the first `ok` baseline's descriptors."""
        base = self.store.baselines(done=True, ok=True)
        if not base or len(self.store.baselines(done=True)) < len(self.store.baselines()):
            return None
        first = self.store.baselines()[0]
        out = json.loads(base[0]["outcome"]) if base[0]["outcome"] else {}
        src = self._source(first["id"])
        d = descriptors(self.niches, self.catalog, src.read_text() if src.is_file() else "", out)
        return {"norm_sha": first["norm_sha"], "exp_id": first["id"], "niche": json.dumps([d[n] for n in self.niches]),
                "via": "start", "island": None}

    def programs(self, island: int, sigma: float) -> list[Program]:
        """The island's programs: the start program, then the others in the order they joined."""
        start = self._start()
        rows = [r for r in self.store.programs(island) if start is None or r["norm_sha"] != start["norm_sha"]]
        if start is not None:
            rows = [{**start, "island": island}] + rows
        return [self._program(r, sigma) for r in rows]

    def elites(self, island: int, sigma: float) -> dict[tuple, Program]:
        """Each niche's confirmed program with the lowest centre, on one island."""
        return _elites_of(self.programs(island, sigma))

    def representatives(self, island: int, sigma: float) -> dict[tuple, Program]:
        """The parent each niche offers an exploring request: its elite; with `confirm_elites = "best"` a niche
        without one offers its unconfirmed single-run program with the lowest value."""
        return self._representatives(self.programs(island, sigma))

    def _representatives(self, progs: list[Program]) -> dict[tuple, Program]:
        el = _elites_of(progs)
        out = dict(el)
        if self.confirm == "best":
            for p in progs:
                if (not p.confirmed and len(p.values) == 1 and p.niche not in el
                        and (p.niche not in out or p.value < out[p.niche].value)):
                    out[p.niche] = p
        return out

    def best(self, island: int, sigma: float) -> Program | None:
        el = self.elites(island, sigma)
        return min(el.values(), key=lambda p: (p.value, p.exp_id)) if el else None

    def niche_of(self, norm: str, island: int) -> tuple | None:
        start = self._start()
        for r in ([start] if start else []) + list(self.store.programs(island)):
            if r["norm_sha"] == norm:
                return tuple(json.loads(r["niche"]))
        return None

    def value_of(self, exp_id: int) -> float | None:
        """The centre of the values of the program that experiment `exp_id` ran (a parent's value)."""
        row = self.store.experiment(exp_id)
        if row is None:
            return None
        r = {"norm_sha": row["norm_sha"], "exp_id": exp_id, "via": "start" if row["kind"] == "baseline" else ""}
        vals = self._values(r)
        return noise.centre(vals) if vals else None

    def snapshot(self, sigma: float) -> dict:
        """Every island's programs and elites, for `arrl status` and the resume tests."""
        return {i: {"programs": [(p.exp_id, p.niche, p.via) for p in self.programs(i, sigma)],
                    "elites": sorted((p.niche, p.exp_id) for p in self.elites(i, sigma).values())}
                for i in range(self.islands)}

    # -- parent selection ----------------------------------------------------------------------------------
    def choose(self, request: int, seed: str, sigma: float) -> tuple[int, Program | None, list[Program]]:
        """(island, parent, inspirations) for proposal request number `request`: deterministic given the
        ledger. The island is the one whose parents have had the fewest candidates (ties: request number mod
        islands), so a request whose proposals were dropped (made by an adapter no longer served) is asked
        again for the same island. A parent whose train.py is gone is skipped (logged once); None when the
        island has no elite."""
        had = self.store.candidates_by_island()
        island = min(range(self.islands), key=lambda i: (had.get(i, 0), (i - request) % self.islands))
        rng = random.Random(f"{seed}:{request}")
        progs = self.programs(island, sigma)
        elites = sorted(_elites_of(progs).values(), key=lambda p: (p.value, p.exp_id))
        usable = [p for p in elites if self._exists(p.exp_id)]
        if not usable:
            return island, None, []
        if rng.random() < self.exploit:
            parent = usable[0]
        else:
            pool = usable
            if self.confirm == "best":
                reps = sorted(self._representatives(progs).values(), key=lambda p: (p.value, p.exp_id))
                pool = [p for p in reps if self._exists(p.exp_id)] or usable
            parent = pool[rng.randrange(len(pool))]
        others = [p for p in usable if p.norm != parent.norm][:self.inspirations]
        return island, parent, others

    def _source(self, exp_id: int) -> Path:
        """Where experiment `exp_id`'s train.py is (the ledger's reader and writer alike; nothing is created)."""
        return self.store.root / "experiments" / f"{exp_id:06d}" / "train.py"

    def _exists(self, exp_id: int) -> bool:
        if self._source(exp_id).is_file():
            return True
        if exp_id not in self.missing:
            self.missing.add(exp_id)
            self.store.event("parent_missing", exp=exp_id)
            self.log(f"archive: exp {exp_id}'s train.py is gone; it is no longer drawn as a parent")
        return False
