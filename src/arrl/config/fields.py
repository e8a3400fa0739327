"""A config field, declared once (`knob`): its type, default, unit, allowed values, checks and a one-line doc.

A field that may be left unset has the default None and a word that spells "unset" in a TOML file
(`unset=("auto", "the target's budget")`): "auto" where arrl.config.resolve derives the value (from
the target, the machine, the batch), "off" where nothing is applied. Older configs and ledgers wrote 0,
-1 or "" for these; `legacy` names that value, which still reads as unset.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import field

TYPES = {"str": str, "int": int, "float": float, "bool": bool, "list": list}
CHECKS = {"positive": ("must be > 0", lambda v: v > 0),
          "non_negative": ("must be >= 0", lambda v: v >= 0),
          "unit": ("must be within [0, 1]", lambda v: 0.0 <= v <= 1.0)}
UNSET_WORDS = ("auto", "off")


class ConfigError(Exception):
    """A config file or value is invalid; the message names the field."""


def knob(default, doc: str, *, unit: str = "", choices: tuple = (), check: str | tuple = (),
         unset: tuple[str, str] | None = None, legacy=None, alias: str = ""):
    """A config field: its default, a one-line doc, its unit, the values it may take and the checks it must
    pass (keys of CHECKS). `unset`: (word, what None means) for a field that may be left unset; `legacy`: the
    value older configs wrote for unset; `alias`: the field's older name. The docs and `arrl config` read
    these; `arrl.config.from_dict` enforces them."""
    if unset is not None and unset[0] not in UNSET_WORDS:
        raise ValueError(f"unset word {unset[0]!r} is not one of {UNSET_WORDS}")
    checks = (check,) if isinstance(check, str) else check
    meta = {"doc": doc, "unit": unit, "choices": tuple(choices), "checks": checks,
            "unset": unset, "legacy": legacy, "alias": alias}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def value_type(f: dataclasses.Field) -> type:
    """The Python type of a field's values (None aside)."""
    return TYPES[str(f.type).split("|")[0].strip()]


def unset_word(f: dataclasses.Field) -> str | None:
    """How a TOML file spells the field's None ("auto" or "off"); None where it may not be unset."""
    return f.metadata["unset"][0] if f.metadata.get("unset") else None


def describe(f: dataclasses.Field, value) -> str:
    """The comment `arrl config` and docs/CONFIG.md put after a field: its doc, what unset means, its unit."""
    m = f.metadata
    notes = [m["doc"]]
    if m.get("unset"):
        notes.append(f'"{m["unset"][0]}": {m["unset"][1]}')
    if m.get("unit"):
        notes.append(f"unit: {m['unit']}")
    if m.get("alias"):
        notes.append(f"formerly `{m['alias']}`")
    return "; ".join(notes)


def check(value, f: dataclasses.Field, where: str):
    """`value` as the field stores it (an int widened to float, an unset spelling to None), or ConfigError."""
    m = f.metadata
    if m.get("unset"):
        legacy = m.get("legacy")
        if value is None or value == m["unset"][0] or (
                legacy is not None and not isinstance(value, bool) and value == legacy):
            return None
    want = value_type(f)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if (want is bool) != isinstance(value, bool) or not isinstance(value, want):
        spelled = f' or "{m["unset"][0]}"' if m.get("unset") else ""
        raise ConfigError(f"{where}: expected {want.__name__}{spelled}, got {type(value).__name__} {value!r}")
    if want is float and not math.isfinite(value):
        raise ConfigError(f"{where}: must be a finite number, got {value!r}")
    choices = m.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(choices)}")
    for name in m.get("checks", ()):
        if not CHECKS[name][1](value):
            raise ConfigError(f"{where}: {CHECKS[name][0]}, got {value!r}")
    return value
