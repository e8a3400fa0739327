"""Adapter files: a PEFT adapter directory as bytes for the object store, the names vLLM serves
versions under, and the content hash the ledger records."""

from __future__ import annotations

import hashlib
from pathlib import Path

from arrl.policy import models
from arrl.policy.proposal import PolicyError

ADAPTER_PREFIX = "arrl-v"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", models.BASE_FILE)

def adapter_files(directory: str | Path) -> dict[str, bytes]:
    """The files of a PEFT adapter directory as {name: bytes}, ready for the object store."""
    d = Path(directory)
    files = {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file() and p.name in ADAPTER_FILES}
    if "adapter_config.json" not in files:
        raise PolicyError(f"{d}: not a PEFT adapter directory (no adapter_config.json)")
    return files


def sha256_files(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name])
    return h.hexdigest()
