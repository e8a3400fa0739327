"""Content hashes of prepared data and of the environment code.

`manifest.json` in a prepared data directory lists every file with its sha256 and size,
the hash of the env code that made it, and the profile's effective constants (among
them `eval_tokens`/`val_tokens` for the validation split and `test_eval_tokens`/
`test_tokens` for the sealed test split). The
environment hash of a run combines the hash of the env code it ran with and the hash of
the data it read: two val_bpb numbers are comparable only when these agree.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

MANIFEST = "manifest.json"
FORMAT = 1
ENV_DIR = Path(__file__).resolve().parent


class DataError(Exception):
    """Prepared data is missing, incomplete or corrupted. The message names the file."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def env_code_sha256(env_dir: Path = ENV_DIR) -> str:
    """Hash of every Python file of the environment, by relative path and content."""
    h = hashlib.sha256()
    for path in sorted(env_dir.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        h.update(path.relative_to(env_dir).as_posix().encode() + b"\0")
        h.update(sha256_file(path).encode() + b"\n")
    return h.hexdigest()


def data_sha256(files: dict[str, dict]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name}\0{files[name]['sha256']}\n".encode())
    return h.hexdigest()


def env_hash(manifest: dict, code_sha256: str | None = None) -> str:
    """The environment hash recorded with every run: env code + prepared data."""
    code = code_sha256 or env_code_sha256()
    return hashlib.sha256(f"{code}:{manifest['data_sha256']}".encode()).hexdigest()


def write(data_dir: Path, meta: dict, relpaths: list[str]) -> dict:
    """Hash `relpaths` under `data_dir` and write the manifest. Deterministic: no clocks."""
    files = {}
    for rel in sorted(relpaths):
        p = data_dir / rel
        files[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    manifest = {
        "format": FORMAT,
        **meta,
        "env_code_sha256": env_code_sha256(),
        "files": files,
        "data_sha256": data_sha256(files),
    }
    tmp = data_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(data_dir / MANIFEST)
    return manifest


def read(data_dir: Path) -> dict:
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{path}: no manifest; the data is not prepared")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path}: unknown manifest format")
    return manifest


def has_test_split(meta: dict) -> bool:
    """Whether a manifest describes a sealed test split (`test/`, `test_eval_tokens`).

    Data prepared before the test split existed has neither; it must be prepared again
    before anything is scored on the test split.
    """
    if not isinstance(meta, dict):
        return False
    n = meta.get("test_eval_tokens")
    files = meta.get("files")
    return (isinstance(n, int) and not isinstance(n, bool) and n > 0 and isinstance(files, dict)
            and any(isinstance(f, str) and f.startswith("test/") for f in files))


def verify(data_dir: Path, full: bool = True, only: str | None = None) -> dict:
    """Check every listed file exists with its size (and, if `full`, its sha256).

    `only` restricts the check to files under one sub-directory (e.g. "train/").
    Raises DataError naming the first bad file.
    """
    data_dir = Path(data_dir)
    manifest = read(data_dir)
    for rel, info in sorted(manifest["files"].items()):
        if only and not rel.startswith(only):
            continue
        p = data_dir / rel
        if not p.is_file():
            raise DataError(f"{p}: missing (listed in {MANIFEST})")
        if p.stat().st_size != info["bytes"]:
            raise DataError(f"{p}: size {p.stat().st_size} != {info['bytes']} in {MANIFEST}")
        if full and sha256_file(p) != info["sha256"]:
            raise DataError(f"{p}: sha256 mismatch; the file is corrupted")
    return manifest
