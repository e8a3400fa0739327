"""What the sandbox tells a training process: paths, profile, budget, seed, device.

The sandbox sets `ARRL_*` environment variables; targets read them only through these
functions, so the same train.py runs in the process sandbox, in Docker, or by hand
(`ARRL_DATA_DIR=... python train.py`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from env import profiles

MODEL_FILE = "model.pt2"
PROGRESS_FILE = "progress.jsonl"


def _get(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise RuntimeError(f"environment variable {name} is not set (runs are started by arrl's sandbox)")
    return value


def data_dir() -> Path:
    """The prepared data of this run's profile (training split only inside a sandbox)."""
    return Path(_get("ARRL_DATA_DIR"))


def work_dir() -> Path:
    """The run's own writable directory; the model and the progress log go here."""
    return Path(_get("ARRL_WORK_DIR", os.getcwd()))


def manifest() -> dict:
    return json.loads((data_dir() / "manifest.json").read_text())


def profile() -> profiles.Profile:
    return profiles.get(manifest()["profile"])


def budget_s() -> float:
    return float(_get("ARRL_BUDGET_S", str(profile().time_budget_s)))


def seed() -> int:
    return int(_get("ARRL_SEED", "0"))


def device() -> str:
    """"cuda" when the sandbox granted a GPU, else "cpu"."""
    return _get("ARRL_DEVICE", "cpu")


def threads() -> int:
    """CPU threads this run may use; targets pass it to torch.set_num_threads."""
    return max(1, int(_get("ARRL_THREADS", str(os.cpu_count() or 1))))


def model_path() -> Path:
    return work_dir() / MODEL_FILE


def progress_path() -> Path:
    return work_dir() / PROGRESS_FILE
