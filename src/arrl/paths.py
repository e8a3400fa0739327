"""Where things live: the env code, the targets, prepared data, run directories.

Each location can be moved with an environment variable; the defaults suit a checkout:
    ARRL_TARGETS_DIR  targets              (default: <checkout>/targets)
    ARRL_DATA_HOME    prepared data        (default: ~/.cache/arrl/data), one folder per profile
    ARRL_RUNS_DIR     run directories      (default: ./runs)
    ARRL_ENV_DIR      the frozen env that sandboxes mount (default: the imported `env` package);
                      on a cluster a copy at a path the host's Docker engine also sees
    ARRL_SCRATCH_DIR  experiment scratch folders (default: the system temp dir); on a cluster
                      a path valid on the host too, for sibling sandbox containers
"""

from __future__ import annotations

import os
from pathlib import Path

import env


def env_dir() -> Path:
    override = os.environ.get("ARRL_ENV_DIR")
    return Path(override).resolve() if override else Path(env.__file__).resolve().parent


def checkout() -> Path:
    return Path(env.__file__).resolve().parent.parent


def scratch_dir() -> Path | None:
    """Where experiment scratch folders go (None: the system temp dir)."""
    override = os.environ.get("ARRL_SCRATCH_DIR")
    return Path(override) if override else None


def targets_dir() -> Path:
    return Path(os.environ.get("ARRL_TARGETS_DIR") or checkout() / "targets")


def data_home() -> Path:
    return Path(os.environ.get("ARRL_DATA_HOME") or Path.home() / ".cache" / "arrl" / "data")


def data_dir(profile: str, home: Path | None = None) -> Path:
    return Path(home or data_home()) / profile


def runs_dir() -> Path:
    return Path(os.environ.get("ARRL_RUNS_DIR") or Path.cwd() / "runs")
