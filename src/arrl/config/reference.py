"""The config as TOML with every field's doc: docs/CONFIG.md (`python -m arrl.config` writes it) and what
`arrl config` prints. `load` reads the printed file back."""

from __future__ import annotations

import dataclasses
import json

from arrl.config.fields import describe, unset_word
from arrl.config.sections import Config


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)  # strings and lists of strings read back as TOML


def _line(f: dataclasses.Field, value, resolved: dict, key: str) -> str:
    note = describe(f, value)
    if value is None and key in resolved:  # what the run used, in place of "auto"
        return f"{f.name} = {_toml(resolved[key])}  # {unset_word(f)}, resolved; " + note
    return f"{f.name} = {_toml(unset_word(f) if value is None else value)}  # " + note


def to_toml(cfg: Config, resolved: dict | None = None) -> str:
    """`cfg` as a TOML file: every field, each with its doc as a comment; `load` reads it back. `resolved`
    ({"section.field": value}, arrl.config.resolve.table) replaces the unset fields' "auto" by the values
    a run resolved them to."""
    resolved = resolved or {}
    lines = []
    for f in dataclasses.fields(Config):
        value = getattr(cfg, f.name)
        if not dataclasses.is_dataclass(value):
            lines.append(_line(f, value, resolved, f.name))
    for f in dataclasses.fields(Config):
        section = getattr(cfg, f.name)
        if dataclasses.is_dataclass(section):
            doc = (type(section).__doc__ or "").strip()
            lines += ["", f"[{f.name}]" + (f"  # {doc.split(']', 1)[1].strip()}" if "] " in doc else "")]
            lines += [_line(g, getattr(section, g.name), resolved, f"{f.name}.{g.name}")
                      for g in dataclasses.fields(section)]
    return "\n".join(lines) + "\n"


def reference() -> str:
    """docs/CONFIG.md: the defaults as TOML, every field documented."""
    return ("# The launch config\n\nGenerated from `src/arrl/config/sections.py` by `python -m arrl.config`; do not "
            "edit. Every field is optional: the value shown is the default. A field shown as \"auto\" is derived "
            "(the comment says from what; arrl.config.resolve does it) and one shown as \"off\" is not applied; "
            "older configs' 0, -1 or \"\" for these still read as unset. Unknown keys and wrong types are one-line "
            "errors naming the field. `arrl config RUN` prints the config a run used in the same form, with its "
            "unset fields resolved.\n\n```toml\n" + to_toml(Config()) + "```\n")
