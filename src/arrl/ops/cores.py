"""CPU cores: core lists ("0-2,5"), and confining a process tree to some cores.

A run's cores are a wall only when the kernel enforces them: as root on a machine with the
cgroup v1 `cpuset` hierarchy (/sys/fs/cgroup/cpuset), each sandbox gets a cgroup
`arrl/<name>` whose `cpuset.cpus` is its cores, and every process it starts is moved into
it before it runs anything (a `sh` wrapper writes its own pid to `tasks`, then `exec`s).
Children inherit the cgroup; `sched_setaffinity` inside cannot widen it, and the sandboxes
mount no /sys to write to. Elsewhere (not root, cgroup v2 only) the wrapper is `taskset`:
affinity, which keeps honest code on its cores but which the code itself may widen; the
sandbox reports which of the two it got (`CoreSet.mode`: "cpuset" or "affinity").
cgroup v2's cpuset controller is not used yet.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

CPUSET_ROOT = Path("/sys/fs/cgroup/cpuset")
PARENT = "arrl"  # every cgroup arrl makes lives under CPUSET_ROOT/arrl


class CoreError(ValueError):
    """A core list that does not parse, or names cores this machine does not offer."""


def parse(text: str) -> tuple[int, ...]:
    """"0-2,5" -> (0, 1, 2, 5); raises CoreError on anything else."""
    cores: set[int] = set()
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        lo, sep, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise CoreError(f"{text!r} is not a core list such as '0-3' or '0,2'") from None
        if a < 0 or b < a:
            raise CoreError(f"{text!r}: {part!r} is not a range of core numbers")
        cores.update(range(a, b + 1))
    return tuple(sorted(cores))


def fmt(cores) -> str:
    """(0, 1, 2, 5) -> "0-2,5"."""
    cores = sorted(set(cores))
    parts, i = [], 0
    while i < len(cores):
        j = i
        while j + 1 < len(cores) and cores[j + 1] == cores[j] + 1:
            j += 1
        parts.append(str(cores[i]) if i == j else f"{cores[i]}-{cores[j]}")
        i = j + 1
    return ",".join(parts)


def available() -> tuple[int, ...]:
    """The cores this process may run on."""
    return tuple(sorted(os.sched_getaffinity(0)))


def cpuset_usable() -> bool:
    """Whether this process can make cpuset cgroups (root, cgroup v1 cpuset mounted)."""
    return os.geteuid() == 0 and (CPUSET_ROOT / "cpuset.cpus").is_file() and os.access(CPUSET_ROOT, os.W_OK)


class CoreSet:
    """Cores one sandbox's processes are confined to. `wrap(cmd)` is the command line that runs `cmd` inside.

    `mode`: "cpuset" (a cgroup: a wall), "affinity" (taskset: honest code only) or "" (no cores given).
    """

    def __init__(self, cores: str, name: str = ""):
        self.cores = fmt(parse(cores)) if cores else ""
        self.mode = ""
        self.path: Path | None = None
        if not self.cores:
            return
        # named after the process that owns it: a sweep removes only the cgroups of dead owners
        self.name = name or f"s{os.getpid()}-{uuid.uuid4().hex[:8]}"
        if cpuset_usable():
            try:
                self.path = _make(self.name, self.cores)
                self.mode = "cpuset"
                return
            except OSError:
                self.path = None
        self.mode = "affinity" if shutil.which("taskset") else ""

    def wrap(self, cmd: list[str]) -> list[str]:
        if self.mode == "cpuset":
            if self.path is None or not self.path.is_dir():  # closed, or removed from outside: make it again
                self.path = _make(self.name, self.cores)
            tasks = self.path / "cgroup.procs"
            return ["/bin/sh", "-c", f'echo $$ > "{tasks}" && exec "$@"', "arrl-cores", *cmd]
        if self.mode == "affinity":
            return ["taskset", "-c", self.cores, *cmd]
        return list(cmd)

    def close(self) -> None:
        """Remove the cgroup (once its processes are gone; a busy one is left for the next sweep)."""
        for _ in range(40):  # killed processes leave the cgroup a moment after they are signalled
            if self.path is None:
                return
            try:
                self.path.rmdir()
                self.path = None
            except OSError:
                time.sleep(0.05)


def _make(name: str, cores: str) -> Path:
    parent = CPUSET_ROOT / PARENT
    if not parent.is_dir():
        parent.mkdir(exist_ok=True)
    for f in ("cpuset.cpus", "cpuset.mems"):  # a v1 child starts empty: it must be given its parent's
        if not (parent / f).read_text().strip():
            (parent / f).write_text((CPUSET_ROOT / f).read_text().strip())
    sweep()
    path = parent / name
    path.mkdir(exist_ok=True)
    (path / "cpuset.cpus").write_text(cores)
    (path / "cpuset.mems").write_text((parent / "cpuset.mems").read_text().strip())
    return path


def _owner_alive(name: str) -> bool:
    """Whether the process a cgroup is named after (s<pid>-...) still runs."""
    try:
        pid = int(name[1:].split("-")[0])
    except ValueError:
        return False
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def sweep() -> int:
    """Remove arrl's cgroups whose owner is gone and that no process uses (left by a worker killed with its
    sandbox). Another live sandbox's cgroup is empty between its runs: it is left alone."""
    parent = CPUSET_ROOT / PARENT
    n = 0
    if not parent.is_dir():
        return 0
    for d in parent.iterdir():
        if d.is_dir() and not _owner_alive(d.name):
            try:
                if not (d / "tasks").read_text().strip():
                    d.rmdir()
                    n += 1
            except OSError:
                pass
    return n


def pin_self(cores: str) -> None:
    """Run this process (and what it starts from now on) on `cores`; trusted parts only (policy, learner)."""
    if cores:
        os.sched_setaffinity(0, parse(cores))
