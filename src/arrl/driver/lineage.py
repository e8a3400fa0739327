"""Runs that start where another left off: the warm start, and a run's lineage.

`[learner] warm_start = "RUN"` (or "RUN:VERSION"; `arrl launch --warm-start`) starts a new run's learner
from another run's adapter version: its LoRA weights and optimizer state, from that run's learner
checkpoint. The policy server serves it from the first proposal on, as this run's version 1, and the
ledger records where it came from (meta `lineage`: the source run, its version, the adapter's sha256,
and the source's own lineage). Chained runs are the perpetual researcher: night 2 starts from night 1's
last adapter, night 3 from night 2's, and `arrl status` and the report show the chain (`chain`).

`source()` checks everything before anything starts and raises ConfigError with one line: a run or a
version that does not exist, a checkpoint the source no longer keeps, an adapter whose files are not the
ones its ledger recorded, or one made for another base model or LoRA rank.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from arrl.config import Config, ConfigError
from arrl.ledger import reader
from arrl.policy.adapters import adapter_files, sha256_files
from arrl.policy.proposal import PolicyError

MAX_DEPTH = 100  # ancestors followed by `chain` (a cycle is impossible: a source exists before its run)


@dataclass(frozen=True)
class Source:
    run: str
    version: int
    ckpt: str  # the source's learner checkpoint directory of that version
    adapter_sha256: str
    model: str
    rank: int

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return f"{self.run} v{self.version} (adapter sha256 {self.adapter_sha256[:12]})"


def parse(spec: str) -> tuple[str, int | None]:
    """"RUN" -> (RUN, None: its last version); "RUN:VERSION" -> (RUN, VERSION)."""
    run, sep, version = spec.partition(":")
    if not run or "/" in run or run.startswith("."):
        raise ConfigError(f"[learner] warm_start: {spec!r} is not RUN or RUN:VERSION")
    if not sep:
        return run, None
    if not version.isdigit() or int(version) < 1:
        raise ConfigError(f"[learner] warm_start: {spec!r}: the version must be a number >= 1")
    return run, int(version)


def source(spec: str, runs: Path, cfg: Config) -> Source:
    """The adapter a run warm-starts from, checked against this run's policy model and LoRA rank."""
    name, version = parse(spec)
    d = runs / name
    where = f"[learner] warm_start = {spec!r}"
    if not (d / "config.json").is_file() or not (d / "ledger.sqlite").is_file():
        raise ConfigError(f"{where}: no run {name!r} in {runs}")
    try:
        theirs = json.loads((d / "config.json").read_text())
        with reader.open_read_only(d) as r:
            versions = {v["version"]: v for v in r.policy_versions()}
    except (OSError, ValueError, reader.Error) as e:
        raise ConfigError(f"{where}: run {name!r} is unreadable ({e})") from None
    if not versions:
        raise ConfigError(f"{where}: run {name!r} trained no adapter version")
    version = version or max(versions)
    if version not in versions:
        raise ConfigError(f"{where}: run {name!r} has adapter versions {min(versions)}-{max(versions)}, not {version}")
    model = (theirs.get("policy") or {}).get("model", "")
    if model != cfg.policy.model:
        raise ConfigError(f"{where}: its adapter was trained for the base model {model!r}; this run's policy model is "
                          f"{cfg.policy.model!r}")
    rank = (theirs.get("learner") or {}).get("rank")
    if rank != cfg.learner.rank:
        raise ConfigError(f"{where}: its adapter has LoRA rank {rank}; this run's [learner] rank is {cfg.learner.rank}")
    ckpt = d / "learner" / f"ckpt-{version:06d}"
    if not (ckpt / "state.pkl").is_file():
        kept = sorted(int(p.name.split("-")[1]) for p in (d / "learner").glob("ckpt-*") if (p / "state.pkl").is_file())
        raise ConfigError(f"{where}: run {name!r} no longer keeps a checkpoint of version {version} (it keeps "
                          f"{', '.join(map(str, kept)) or 'none'}; [learner] keep_checkpoints)")
    try:
        sha = sha256_files(adapter_files(ckpt / "adapter"))
        as_written = sha256_files(adapter_files(ckpt / "adapter", canonical=False))  # a run's record before 12-06
    except (OSError, PolicyError) as e:
        raise ConfigError(f"{where}: the checkpoint's adapter is unreadable ({e})") from None
    recorded = versions[version].get("adapter_sha256")
    if recorded and recorded not in (sha, as_written):
        raise ConfigError(f"{where}: the checkpoint's adapter is not the one run {name!r} recorded for version "
                          f"{version} (sha256 {sha[:12]}, recorded {recorded[:12]})")
    return Source(name, version, str(ckpt), sha, model, rank)


def chain(run_dir: Path) -> list[dict]:
    """The run's ancestry, nearest first: one {"run", "version", "adapter_sha256"} per warm start, with
    "trained_on" (the runs) where that ancestor is a learner trained offline (arrl.driver.offline), and
    "missing": true where its ledger is gone (the chain ends there)."""
    out: list[dict] = []
    d = Path(run_dir)
    for _ in range(MAX_DEPTH):
        with reader.open_read_only(d) as r:
            link = r.meta("lineage")
        if not link:
            break
        out.append({k: link[k] for k in ("run", "version", "adapter_sha256")})
        d = d.parent / link["run"]
        if not (d / "ledger.sqlite").is_file():
            out[-1]["missing"] = True
            break
        with reader.open_read_only(d) as r:
            trained_on = r.meta("trained_on")
        if trained_on:
            out[-1]["trained_on"] = [t["run"] for t in trained_on]
    return out


def describe(links: list[dict]) -> str:
    """"warm-started from night-2 v5 <- offline-1 v4 (trained offline on night-1)" (empty for a run that
    started cold)."""
    if not links:
        return ""
    parts = [f"{x['run']} v{x['version']}" + (" (gone)" if x.get("missing") else "") +
             (f" (trained offline on {', '.join(x['trained_on'])})" if x.get("trained_on") else "") for x in links]
    return "warm-started from " + " <- ".join(parts)
