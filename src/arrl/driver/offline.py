"""A learner trained offline on past runs' ledgers: `arrl learn NAME --from RUN [RUN ...]`.

Every learnable result of the source runs (a candidate with a reward, and its proposal's prompt,
tokens and logprobs) is a sample. Samples keep the groups they had in their run (proposals from one
policy state, or for one incumbent), prefixed with the run's name so no group spans two runs, and go
to the same `Learner.update` as in a live run, in batches of `[learner] batch_size`, oldest first, for
`passes` passes over the data. PPO's ratio is taken against the logprobs the proposing adapter
reported, which is the off-policy correction; the staleness filter (about a live run's lag) does not
apply offline.

The result is a run directory that holds only a learner: config.json, a ledger whose policy versions
record each update, and the checkpoints. `arrl launch --warm-start NAME` starts a run from it, and the
lineage (`lineage.chain`) names the runs it learned from. With `warm_start` it continues from another
run's adapter instead of the base model: training between runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from arrl.config import Config, ConfigError
from arrl.driver import lineage
from arrl.learner import trajectory
from arrl.ledger import reader
from arrl.ledger.store import Store
from arrl.policy.adapters import sha256_files

NO_STALENESS = 1 << 30  # every sample is kept: the ratio to the behaviour logprobs is the correction


def samples(runs: Path, names: list[str], cfg: Config) -> tuple[pa.Table, dict[str, int]]:
    """The learnable results of the runs `names` (checked against this learner's model and rank), oldest first
    within each run, and how many each run gave."""
    parts, counts = [], {}
    for name in names:
        d = runs / name
        if not (d / "config.json").is_file() or not (d / "ledger.sqlite").is_file():
            raise ConfigError(f"--from {name}: no run {name!r} in {runs}")
        try:
            theirs = json.loads((d / "config.json").read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"--from {name}: {d / 'config.json'} is unreadable ({e})") from None
        model = (theirs.get("policy") or {}).get("model", "")
        if model != cfg.policy.model:
            raise ConfigError(f"--from {name}: its proposals came from the base model {model!r}; this learner's is "
                              f"{cfg.policy.model!r}")
        group_by = (theirs.get("learner") or {}).get("group_by", cfg.learner.group_by)
        dups = (theirs.get("learner") or {}).get("learn_duplicates", cfg.learner.learn_duplicates)
        try:
            with reader.open_read_only(d) as r:
                ids = r.learnable(dups)
                batch = trajectory.from_ledger(r, ids, group_by)
        except reader.Error as e:
            raise ConfigError(f"--from {name}: its ledger is unreadable ({e})") from None
        groups = pa.array([f"{name}:{g}" for g in batch.column("group").to_pylist()], pa.string())
        batch = batch.set_column(batch.schema.get_field_index("group"), "group", groups)
        parts.append(pa.Table.from_batches([batch], schema=trajectory.SCHEMA))
        counts[name] = batch.num_rows
    table = pa.concat_tables(parts) if parts else trajectory.SCHEMA.empty_table()
    if not table.num_rows:
        raise ConfigError(f"--from {' '.join(names)}: no learnable results (candidates with a reward and the "
                          "proposal's tokens and logprobs)")
    return table, counts


def learn(name: str, sources: list[str], cfg: Config, runs: Path, passes: int = 1, log=print) -> Path:
    """Train a learner on the sources' samples into the new run directory runs/NAME; returns it."""
    from arrl.learner.learner import Learner
    from arrl.policy import models

    if passes < 1:
        raise ConfigError(f"--passes: must be >= 1, got {passes}")
    d = runs / name
    if "/" in name or name.startswith(".") or (d / "config.json").exists():
        raise ConfigError(f"{d}: a run named {name!r} exists (or the name is not a plain folder name)")
    table, counts = samples(runs, sources, cfg)
    warm = lineage.source(cfg.learner.warm_start, runs, cfg) if cfg.learner.warm_start else None
    cfg.name = name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
    store = Store(d)
    trained_on = [{"run": r, "samples": n} for r, n in counts.items()]
    with store.tx():
        store.put("trained_on", trained_on)
        store.put("status", "learning")
    settings = {**cfg.learner.settings(0.0), "max_staleness": NO_STALENESS}
    lrn = Learner(models.resolve(cfg.policy.model, progress=False), settings, str(d / "learner"))
    if warm is not None:
        lrn.warm_start(warm.ckpt)
        link = warm.link()
        with store.tx():
            store.add_policy_version(1, warm_start=link, adapter_sha256=sha256_files(lrn.adapter_files()))
            store.put("lineage", link)
        log(f"learn: starting from {warm.describe()}")
    size = cfg.learner.batch_size
    log(f"learn: {table.num_rows} samples from {', '.join(f'{r} ({n})' for r, n in counts.items())}; "
        f"batches of {size}, {passes} pass(es)")
    for p in range(passes):
        for start in range(0, table.num_rows, size):
            chunk = table.slice(start, size)
            if chunk.num_rows < size and start:  # a short tail joins the next pass, as a live run waits for it
                continue
            batch = chunk.combine_chunks().to_batches()[0]
            # the staleness filter compares with the learner's own versions, which these samples never had
            version = pa.array([lrn.version] * batch.num_rows, pa.int64())
            batch = batch.set_column(batch.schema.get_field_index("adapter_version"), "adapter_version", version)
            res = lrn.update(batch)
            if not res.updated:
                continue
            info = {**res.info(), "offline": {"pass": p + 1, "first_sample": start}}
            with store.tx():
                store.add_policy_version(res.version, **info, adapter_sha256=sha256_files(res.files))
            m = res.metrics
            log(f"learn: v{res.version} (pass {p + 1}) from {len(res.exp_ids)} samples, reward "
                f"{res.reward_mean:+.2f}, kl {m.get('kl', float('nan')):.4f}, clip "
                f"{m.get('clip_fraction', float('nan')):.2f}, {res.update_s:.1f} s")
    with store.tx():
        store.put("status", "finished")
        store.put("stop_reason", f"trained offline on {', '.join(sources)}")
    store.close()
    lrn.shutdown()
    return d
