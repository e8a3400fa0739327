"""A worker's scratch folder on its node's disk: its runs train there and the models it keeps for the
sealed test split live there (up to KEEP_MODELS of them, each the size of a trained model).

The folder is made with its owner written in it (host and pid), removed when the worker closes at the end
of a launch or a Tune trial, and swept by the next worker made on that host once its owner is gone without
closing (kill -9, a lost actor, a killed driver). A folder whose owner is alive, on another host (a shared
ARRL_SCRATCH_DIR) or unknown (no owner file) is never touched.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

OWNER = ".owner"  # "<host> <pid>" of the worker that made the folder


def _root(base: Path | None) -> Path:
    return base if base is not None else Path(tempfile.gettempdir())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def owner(d: Path) -> tuple[str, int] | None:
    """The (host, pid) written in scratch folder `d`, or None where it has no readable owner."""
    try:
        host, pid = (d / OWNER).read_text().split()
        return host, int(pid)
    except (OSError, ValueError):
        return None


def sweep(base: Path | None = None) -> int:
    """Remove the scratch folders in `base` (default: the system temp dir) whose owner was a process of
    this host that no longer exists; returns how many were removed."""
    host, removed = socket.gethostname(), 0
    try:
        found = list(_root(base).glob("arrl-*"))
    except OSError:
        return 0
    for d in found:
        who = owner(d)
        if who is None or who[0] != host or who[1] == os.getpid() or _alive(who[1]):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed += 1
    return removed


def make(name: str, base: Path | None = None) -> Path:
    """A new scratch folder for worker `name` in `base`, owned by this process; the folders of dead owners
    on this host are swept first."""
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    sweep(base)
    d = Path(tempfile.mkdtemp(prefix=f"arrl-{name.replace('/', '-')}-", dir=base))
    (d / OWNER).write_text(f"{socket.gethostname()} {os.getpid()}\n")
    return d


def remove(d: Path) -> None:
    shutil.rmtree(d, ignore_errors=True)
