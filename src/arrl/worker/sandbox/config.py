"""The sandbox's settings and the fixed paths a run sees inside it (see process.py for the containment)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

ENV_MOUNT = "/arrl/env"
DATA_MOUNT = "/arrl/data"
WORK_MOUNT = "/arrl/work"
MODEL_FILE = "model.pt2"
PROGRESS_FILE = "progress.jsonl"
# How often the watchdog looks, while a run trains. Each look, and each wake-up, costs the run: it
# lands on the run's own cores, and a preempted torch thread stalls its partner at the next
# barrier (at 20 looks a second the worker took 13% of a core from a 2-core tiny run; at 4 looks
# plus a 20-a-second exit poll, 1.8%: bench/idle_parts.py). So the watchdog sleeps on the
# trainer's exit (a pidfd) between looks: the process tree (memory, process count, CPU time)
# twice a second, the work dir's size and the progress records (early abort) once a second, and
# the deadline when it comes. A descendant that exits between looks loses at most WATCH_S of its
# CPU time from the accounting (the trainer itself none: it is read once more as a zombie);
# prlimit bounds each process's memory in between.
WATCH_S = 0.5
DISK_S = 1.0
PROGRESS_S = 1.0


@dataclass(frozen=True)
class SandboxConfig:
    budget_s: float  # training budget the target sees
    grace_s: float = 20.0  # extra time for start-up and saving before the hard kill
    memory_mb: int = 4096  # resident memory of the whole process tree
    max_procs: int = 64  # processes in the run's tree
    max_file_mb: int = 2048  # largest file the run may write
    max_work_mb: int = 8192  # disk the run's work directory may hold in all
    log_cap_bytes: int = 1 << 20  # log kept on disk (head); the tail is always kept
    threads: int = os.cpu_count() or 1
    eval_timeout_s: float = 300.0
    isolation: str = "auto"  # auto | bwrap | none
    python: str = sys.executable
    gpu: str | None = None  # host GPU index or UUID given to this run; None = CPU
    cores: str = ""  # the CPU cores the run is confined to, e.g. "1" or "0-3" ("" = not pinned)
    nice: int | None = 0  # the run's scheduling priority (None = inherit). Ray starts its workers at nice 15,
    # where a run would yield its cores to every nice-0 process of the node; raising it back needs root
    # (elsewhere `nice` says it cannot and the run keeps the worker's)


def bwrap_available() -> bool:
    """True if bubblewrap exists and can create its namespaces on this machine."""
    if shutil.which("bwrap") is None:
        return False
    try:
        r = subprocess.run(["bwrap", "--unshare-all", "--ro-bind", "/", "/", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0

