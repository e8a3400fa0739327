"""The launch config: a TOML file whose every field is optional and checked.

Owns: the fields (`fields`: one declaration per field, with its type, default, unit, checks and doc),
the sections (`sections`), reading a file or a stored run's config (`load`, `from_dict`), what an unset
field resolves to (`resolve`), and the generated reference (`reference`: docs/CONFIG.md, written by
`python -m arrl.config`). Does not own: what the loop does with a value. Imports nothing else of arrl,
so every layer may import it.

A top-level `target` names a folder under targets/ or a path; `name` is the run's name (default:
<target>-<date>-<time>). A field that may be left unset is None here and "auto" or "off" in a TOML
file; arrl.config.resolve says, in one place, what each one becomes. `arrl config [RUN|FILE]` prints
a config with every field documented, and a run's with its unset fields resolved.

Unknown keys and wrong types are errors that name the field (`ConfigError`).
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from arrl.config.fields import ConfigError, check, value_type
from arrl.config.sections import (Config, ContentionSection, IntegritySection, LearnerSection, OracleSection,
                                  PlacementSection, PolicySection, RewardSection, SearchSection, TrackSection,
                                  WorkersSection)
from arrl.config.reference import reference, to_toml
from arrl.config.resolve import auto_gpus

__all__ = ["Config", "ConfigError", "ContentionSection", "IntegritySection", "LearnerSection", "OracleSection",
           "PlacementSection", "PolicySection", "RewardSection", "SearchSection", "TrackSection", "WorkersSection",
           "auto_gpus", "field_type", "from_dict", "load", "reference", "to_toml"]


NOTICES = ("accepted", "stopped", "attention")  # what [track] notify may name (arrl.track.notices)


def field_type(section: str, name: str) -> type:
    """The Python type of a field's values (`section` "" for the top level)."""
    cls = type(getattr(Config(), section)) if section else Config
    return value_type(next(f for f in dataclasses.fields(cls) if f.name == name))


def _section(current, values: dict, where: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(current)}
    aliases = {f.metadata["alias"]: f.name for f in fields.values() if f.metadata.get("alias")}
    for k, v in values.items():
        name = aliases.get(k, k)
        if name not in fields:
            raise ConfigError(f"{where} {k}: unknown field (known: {', '.join(fields)})")
        if name != k and name in values:
            raise ConfigError(f"{where} {k}: the older name of {name}, which is set too; keep one")
        setattr(current, name, check(v, fields[name], f"{where} {k}"))


def from_dict(data: dict, source: str = "config") -> Config:
    """A Config from a TOML table or a stored run's config.json (older ones' 0/-1/"" for unset fields and
    older field names read as they did)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a table of settings")
    cfg = Config()
    top = {f.name: f for f in dataclasses.fields(Config)}
    for key, value in data.items():
        if key not in top:
            raise ConfigError(f"{source}: unknown field {key!r} (fields: {', '.join(top)})")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: [{key}] must be a table, got {type(value).__name__}")
            _section(current, value, f"{source}: [{key}]")
        else:
            setattr(cfg, key, check(value, top[key], f"{source}: {key}"))
    if cfg.policy.kind == "external" and not cfg.policy.base_url:
        raise ConfigError(f"{source}: [policy] base_url: required when kind = 'external'")
    mb = cfg.learner.minibatch_size
    if mb is not None and mb > cfg.learner.batch_size:
        raise ConfigError(f"{source}: [learner] minibatch_size: {mb} is larger than batch_size "
                          f"{cfg.learner.batch_size}")
    s = cfg.search
    if s.strategy == "population":
        if s.islands > cfg.workers.count:
            raise ConfigError(f"{source}: [search] islands: {s.islands} islands for {cfg.workers.count} worker(s); "
                              f"an island needs a worker, so use at most {cfg.workers.count}")
        if not s.confirm:
            raise ConfigError(f"{source}: [search] confirm: strategy = 'population' needs confirm = true (an elite "
                              f"is a program whose second run agrees with its first)")
        bad = [n for n in s.niches if not isinstance(n, str)]
        if bad:
            raise ConfigError(f"{source}: [search] niches: expected names, got {bad[0]!r}")
    bad = [n for n in cfg.track.notify if n not in NOTICES]
    if bad:
        raise ConfigError(f"{source}: [track] notify: {bad[0]!r} is not one of {', '.join(NOTICES)}")
    return cfg


def load(path: str | Path) -> Config:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read the config file ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML ({e})") from None
    return from_dict(data, str(p))
