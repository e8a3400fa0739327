"""Watching a run from outside: its process tree, its exit, its CPU time and memory, the size of
its work directory, and killing all of it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil

from arrl.ops.procs import started


def tree(pid: int) -> list[psutil.Process]:
    return trees(pid)[0]


def trees(*roots: int) -> tuple[list[psutil.Process], ...]:
    """The process tree under each root pid, from one scan of the process table (psutil's
    children() scans all of it per call: the watchdog's largest cost on a run's cores)."""
    kids: dict[int, list[int]] = {}
    procs: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["ppid"]):  # psutil keeps these objects between calls
        procs[p.pid] = p
        kids.setdefault(p.info["ppid"], []).append(p.pid)
    out = []
    for root in roots:
        pids, i = [root], 0
        while i < len(pids):
            pids += kids.get(pids[i], [])
            i += 1
        out.append([procs[pid] for pid in pids if pid in procs])
    return tuple(out)


class ExitWatch:
    """Waits for a child's exit without polling: on a pidfd where the kernel has them (Linux 5.3+),
    else (and for a container, whose exit code the engine reports) by `poll` every 50 ms. The pidfd
    reports the exit before the child is reaped, so its CPU time, and that of the descendants it
    reaped, can still be read."""

    def __init__(self, proc):
        self.proc = proc
        self.fd = None
        if isinstance(proc, subprocess.Popen):
            try:
                self.fd = os.pidfd_open(proc.pid)
            except (AttributeError, OSError):
                pass

    def wait(self, timeout: float) -> bool:
        """True once the child has exited (waiting at most `timeout` seconds for it)."""
        timeout = max(0.0, timeout)
        if self.fd is None:
            if self.proc.poll() is not None:
                return True
            time.sleep(min(timeout, 0.05))
            return self.proc.poll() is not None
        import select

        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        return bool(poller.poll(timeout * 1000))

    def final_cpu_s(self) -> float:
        """The exited, unreaped child's CPU seconds with its reaped descendants' (0.0 where unreadable)."""
        try:
            t = psutil.Process(self.proc.pid).cpu_times()
            return t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            return 0.0

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def busy_s(cores) -> float | None:
    """Seconds the kernel counts `cores` busy since boot (all but idle and iowait, steal included), from
    /proc/stat; None where it cannot be read. Busy time on a run's cores that is not the run's own is
    what other processes took from it (arrl.driver.contention)."""
    want = {f"cpu{c}" for c in cores}
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for line in lines:
        f = line.split()
        if f and f[0] in want:
            v = [int(x) for x in f[1:9]]
            total += sum(v) - v[3] - v[4]  # user nice system idle iowait irq softirq steal
    return total / ticks


def thread_cpu_s() -> float:
    """CPU seconds of the calling thread (the watchdog's own cost, which may land on the run's cores)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_THREAD)
    return r.ru_utime + r.ru_stime


def cpu_times(procs: list[psutil.Process], seen: dict) -> None:
    """Note each process's CPU seconds so far (user + system; its own, not its children's, so nothing
    counts twice when a parent reaps a child). What a process used after the last look is lost:
    at most one poll interval of it."""
    for p in procs:
        try:
            t = p.cpu_times()
            seen[(p.pid, started(p.pid))] = t.user + t.system  # not create_time: a clock step moves it
        except psutil.Error:
            pass


def rss_mb(procs: list[psutil.Process]) -> float:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


MAX_WORK_ENTRIES = 100_000  # files and folders in the work dir; also bounds the cost of sizing it


def usage(root: Path) -> tuple[int, int]:
    """(bytes on disk, entries) under `root`, links not followed; stops counting past MAX_WORK_ENTRIES."""
    used = entries = 0
    stack = [str(root)]
    while stack and entries <= MAX_WORK_ENTRIES:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    entries += 1
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        else:
                            used += entry.stat(follow_symlinks=False).st_blocks * 512
                    except OSError:
                        pass
        except OSError:
            pass
    return used, entries


def kill(proc: subprocess.Popen, token: str) -> None:
    """Kill the process, its group, its descendants, and any process carrying `token`.

    The token catches children that left the tree (double fork, setsid) when there is
    no pid namespace to tear down.
    """
    victims = {p.pid for p in tree(proc.pid)}
    if not isinstance(proc, subprocess.Popen):
        proc.kill()  # a container: the engine kills it even where its uid is not ours to signal
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    needle = f"ARRL_RUN_TOKEN={token}".encode()
    for p in psutil.process_iter():
        try:
            if p.pid in victims or needle in Path(f"/proc/{p.pid}/environ").read_bytes().split(b"\0"):
                p.kill()
        except (psutil.Error, OSError):
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
