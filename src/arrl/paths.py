"""Where things live: the env code, the targets, prepared data, run directories.

Each location can be moved with an environment variable; the defaults suit a checkout:
    ARRL_TARGETS_DIR  targets              (default: <checkout>/targets)
    ARRL_DATA_HOME    prepared data        (default: ~/.cache/arrl/data), one folder per profile
    ARRL_RUNS_DIR     run directories      (default: ./runs)
"""

from __future__ import annotations

import os
from pathlib import Path

import env


def env_dir() -> Path:
    return Path(env.__file__).resolve().parent


def checkout() -> Path:
    return env_dir().parent


def targets_dir() -> Path:
    return Path(os.environ.get("ARRL_TARGETS_DIR") or checkout() / "targets")


def data_home() -> Path:
    return Path(os.environ.get("ARRL_DATA_HOME") or Path.home() / ".cache" / "arrl" / "data")


def data_dir(profile: str, home: Path | None = None) -> Path:
    return Path(home or data_home()) / profile


def runs_dir() -> Path:
    return Path(os.environ.get("ARRL_RUNS_DIR") or Path.cwd() / "runs")
