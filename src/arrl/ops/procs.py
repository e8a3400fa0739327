"""Which process is which, across steps of the wall clock.

A pid is reused, so a process is named by its pid and its start time. psutil's `create_time()`
is the start in clock ticks since boot plus the boot time, and Linux derives the boot time
(`btime` in /proc/stat) from the wall clock: when a VM is paused, forked or migrated and its
clock is stepped, `btime` moves, and with it every process's `create_time()`. A check of
"is my owner still the process I started under" that compares `create_time()` then sees a
different process and acts on it: the vLLM guard took its server down four times in a README
run (2026-12-06, dmesg: "crng reseeded due to virtual machine fork"). `started(pid)` reads the
start in ticks since boot, which never changes.
"""

from __future__ import annotations

import os

import psutil

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def started(pid: int) -> float:
    """Seconds after boot at which `pid` started (Linux: /proc/PID/stat, unaffected by clock steps;
    elsewhere psutil's create_time). Raises psutil.NoSuchProcess when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        raise psutil.NoSuchProcess(pid) from None
    except OSError:  # no procfs (macOS): the wall-clock value is all there is
        return psutil.Process(pid).create_time()
    fields = stat[stat.rindex(b")") + 2:].split()  # after "pid (comm) ": field 3 (state) onward
    return int(fields[19]) / _TICKS  # field 22, starttime
