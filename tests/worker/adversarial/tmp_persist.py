"""Persisting outside the run: leave files in /tmp, /dev/shm and /var/tmp, a POSIX shared-memory segment and a
Unix socket, all named with this case's token, expecting to find them (or to be found by a later run) on the host.
Each sandbox has its own scratch file systems: nothing with the token may appear on the host."""

import socket
from multiprocessing import resource_tracker, shared_memory

TOKEN = "{{TOKEN}}"


def attempt(what, fn):
    try:
        got = fn()
    except Exception as e:  # noqa: BLE001 - a failure is the sandbox working
        print(f"INFO {what} failed: {type(e).__name__}: {e}", flush=True)
        return None
    print(f"INFO {what}: {got!r}"[:300], flush=True)
    return got


def leave(path):
    with open(path, "w") as f:
        f.write("left behind by train.py\n")
    return path


def shm():
    seg = shared_memory.SharedMemory(name=f"arrl-adv-shm-{TOKEN}", create=True, size=4096)
    resource_tracker.unregister(seg._name, "shared_memory")  # keep it after exit
    return seg.name


def sock():
    s = socket.socket(socket.AF_UNIX)
    s.bind(f"/tmp/arrl-adv-{TOKEN}.sock")
    return s.getsockname()


for directory in ("/tmp", "/dev/shm", "/var/tmp"):
    attempt(f"file in {directory}", lambda directory=directory: leave(f"{directory}/arrl-adv-{TOKEN}"))
attempt("shared memory segment", shm)
attempt("unix socket in /tmp", sock)
