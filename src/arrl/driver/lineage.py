"""Runs that start where another left off: the warm start, and a run's lineage.

`[learner] warm_start = "RUN"` (or "RUN:VERSION"; `arrl launch --warm-start`) starts a new run's learner
from another run's adapter version: its LoRA weights and optimizer state, from that run's learner
checkpoint. The policy server serves it from the first proposal on, as this run's version 1, and the
ledger records where it came from (meta `lineage`: the source run, its version, the adapter's sha256,
and the source's own lineage). Chained runs are the perpetual researcher: night 2 starts from night 1's
last adapter, night 3 from night 2's, and `arrl status` and the report show the chain (`chain`). The
source may be a run of another runs folder, named by its path; the lineage then keeps that path.

With the learner off (`[learner] enabled = false`), the run serves that adapter frozen (`serve_frozen`):
what a perpetual run learned, measured on new targets without learning more (the research method
`rl-frozen`, arrl.bench.transfer). It is recorded the same way, as version 1, the only one; a resumed
run serves it again.

`source()` checks everything before anything starts and raises ConfigError with one line: a run or a
version that does not exist, a checkpoint the source no longer keeps, an adapter whose files are not the
ones its ledger recorded, or one made for another base model or LoRA rank.
"""

from __future__ import annotations

import json
import time
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
    dir: str = ""  # the source run's folder where it is not in this run's runs folder

    def link(self) -> dict:
        """What the ledger records of it (meta `lineage`, and the version's `warm_start`)."""
        return {"run": self.run, "version": self.version, "adapter_sha256": self.adapter_sha256,
                **({"dir": self.dir} if self.dir else {})}

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return f"{self.run} v{self.version} (adapter sha256 {self.adapter_sha256[:12]})"


def parse(spec: str) -> tuple[str, int | None]:
    """"RUN" -> (RUN, None: its last version); "RUN:VERSION" -> (RUN, VERSION). A spec with a "/" is a run
    folder's path, anywhere ("../nights/night-1", "/data/runs/night-1:3")."""
    if "/" in spec:
        head, sep, tail = spec.rpartition(":")
        path, version = (head, tail) if sep and "/" not in tail else (spec, "")
        if not path.strip("/."):
            raise ConfigError(f"[learner] warm_start: {spec!r} is not RUN, RUN:VERSION or a run folder's path")
        if version and (not version.isdigit() or int(version) < 1):
            raise ConfigError(f"[learner] warm_start: {spec!r}: the version must be a number >= 1")
        return path, int(version) if version else None
    run, sep, version = spec.partition(":")
    if not run or run.startswith("."):
        raise ConfigError(f"[learner] warm_start: {spec!r} is not RUN, RUN:VERSION or a run folder's path")
    if not sep:
        return run, None
    if not version.isdigit() or int(version) < 1:
        raise ConfigError(f"[learner] warm_start: {spec!r}: the version must be a number >= 1")
    return run, int(version)


def source(spec: str, runs: Path, cfg: Config) -> Source:
    """The adapter a run warm-starts from, checked against this run's policy model and LoRA rank."""
    name, version = parse(spec)
    d = Path(name).resolve() if "/" in name else runs / name
    elsewhere = str(d) if "/" in name else ""  # a run outside this runs folder: the lineage keeps its path
    name, runs = d.name, d.parent
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
    return Source(name, version, str(ckpt), sha, model, rank, elsewhere)


def serve_frozen(store, policy, source: Source, log=print) -> None:
    """Serve `source`'s adapter as this run's version 1, read from its checkpoint, with no learner: the
    policy server loads it before the first proposal, and the ledger records it (once, on a new run)."""
    import ray

    try:
        files = adapter_files(Path(source.ckpt) / "adapter")
    except (OSError, PolicyError) as e:
        raise ConfigError(f"[learner] warm_start: {source.describe()}: unreadable ({e})") from None
    t0 = time.time()
    swap_s = ray.get(policy.load_adapter.remote(1, ray.put(files)))
    if not store.policy_version():
        with store.tx():
            store.add_policy_version(1, warm_start=source.link(), adapter_sha256=sha256_files(files),
                                     loaded_at=time.time(), swap_s=swap_s, sync_s=time.time() - t0, frozen=True)
            store.put("lineage", source.link())
    log(f"policy: serving {source.describe()} frozen (the learner is off)")


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
        d = Path(link["dir"]) if link.get("dir") else d.parent / link["run"]
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
