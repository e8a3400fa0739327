"""Adapter files: a PEFT adapter directory as bytes for the object store, the names vLLM serves
versions under, and the content hash the ledger records."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from arrl.policy import models
from arrl.policy.proposal import PolicyError

ADAPTER_PREFIX = "arrl-v"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", models.BASE_FILE)

def adapter_files(directory: str | Path, canonical: bool = True) -> dict[str, bytes]:
    """The files of a PEFT adapter directory as {name: bytes}, ready for the object store. `canonical`: the
    config rewritten so that one adapter always has the same bytes, and so the same hash (`canonical_config`)."""
    d = Path(directory)
    files = {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file() and p.name in ADAPTER_FILES}
    if "adapter_config.json" not in files:
        raise PolicyError(f"{d}: not a PEFT adapter directory (no adapter_config.json)")
    if canonical:
        files["adapter_config.json"] = canonical_config(files["adapter_config.json"])
    return files


def canonical_config(data: bytes) -> bytes:
    """adapter_config.json with its keys and its `target_modules` sorted: PEFT writes that set in the order
    of the saving process's string hashes, so two processes saving one adapter wrote different bytes."""
    try:
        cfg = json.loads(data)
    except ValueError as e:
        raise PolicyError(f"adapter_config.json is not JSON ({e})") from None
    if isinstance(cfg, dict) and isinstance(cfg.get("target_modules"), list):
        cfg["target_modules"] = sorted(cfg["target_modules"])
    return (json.dumps(cfg, indent=2, sort_keys=True) + "\n").encode()


def sha256_files(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name])
    return h.hexdigest()
