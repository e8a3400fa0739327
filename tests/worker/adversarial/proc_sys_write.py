"""Kernel knobs: open for writing (never writing) the global ones that a root process outside a sandbox could use
to escape or to take the machine down (/proc/sysrq-trigger, core_pattern, modprobe, drop_caches, uevent_helper,
the cgroup tree), and lower its own OOM score to -1000 so the host's OOM killer would pick another victim. All
must be refused."""

import os


def attempt(what, fn):
    try:
        got = fn()
    except Exception as e:  # noqa: BLE001 - a failure is the sandbox working
        print(f"BLOCKED {what}: {type(e).__name__}: {e}", flush=True)
        return None
    print(f"ESCAPED {what}: {got!r}"[:300], flush=True)
    return got


def open_for_write(path):
    fd = os.open(path, os.O_WRONLY)
    os.close(fd)
    return f"{path} is writable"


def oom_score():
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("-1000")
    with open("/proc/self/oom_score_adj") as f:
        value = f.read().strip()
    if value != "-1000":
        raise PermissionError(f"oom_score_adj stayed {value}")
    return value


for path in ("/proc/sysrq-trigger", "/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe",
             "/proc/sys/vm/drop_caches", "/proc/sys/kernel/panic", "/sys/kernel/uevent_helper",
             "/sys/fs/cgroup/cgroup.procs", "/sys/fs/cgroup/cgroup.subtree_control"):
    attempt(f"open {path} for writing", lambda path=path: open_for_write(path))
attempt("oom_score_adj -1000", oom_score)
print("done: kernel knobs tried", flush=True)
