"""Looking at host processes through /proc: list every visible pid and its command line, looking for processes of
the host (the Docker engine, a sentinel process the test started with a unique argument), and
read the home canary through /proc/<pid>/root. The sandbox has its own pid namespace: only its own processes may
be visible."""

import os

SENTINEL = "{{SENTINEL}}"
CANARY = "{{HOME_CANARY}}"
HOST_WORDS = (SENTINEL, "dockerd", "containerd", "raylet")  # words in no sandbox command line


def attempt(what, fn):
    try:
        got = fn()
    except Exception as e:  # noqa: BLE001 - a failure is the sandbox working
        print(f"BLOCKED {what}: {type(e).__name__}: {e}", flush=True)
        return None
    print(f"ESCAPED {what}: {got!r}"[:300], flush=True)
    return got


def cmdlines():
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                out[int(pid)] = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            pass
    return out


def host_processes():
    host = {pid: c for pid, c in cmdlines().items() if any(w in c for w in HOST_WORDS)}
    if not host:
        raise LookupError("no host process in sight")
    return host


def canary_through_roots():
    for pid in sorted(cmdlines()):
        try:
            with open(f"/proc/{pid}/root{CANARY}") as f:
                return f"pid {pid}: {f.read()}"
        except OSError:
            pass
    raise FileNotFoundError("no visible process has the host's root")


print(f"INFO visible processes: {sorted(cmdlines())}", flush=True)
attempt("host processes in /proc", host_processes)
attempt("home canary through /proc/<pid>/root", canary_through_roots)
print("done: /proc surveyed", flush=True)
