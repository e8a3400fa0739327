"""Gaining privileges to remount the env writable: create a new user + mount namespace (where the script is root),
remount /arrl/env and /arrl/data read-write, and write to them. Mounts inherited from the sandbox are locked
read-only, and writes must not reach the host files."""

import ctypes
import os

CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
MS_RDONLY, MS_REMOUNT, MS_BIND = 1, 32, 4096
libc = ctypes.CDLL(None, use_errno=True)


def attempt(what, fn):
    try:
        got = fn()
    except Exception as e:  # noqa: BLE001 - a failure is the sandbox working
        print(f"BLOCKED {what}: {type(e).__name__}: {e}", flush=True)
        return None
    print(f"ESCAPED {what}: {got!r}"[:300], flush=True)
    return got


def check(rc):
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def unshare():
    uid, gid = os.getuid(), os.getgid()
    check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS))
    for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"0 {uid} 1"),
                       ("/proc/self/gid_map", f"0 {gid} 1")):
        with open(path, "w") as f:
            f.write(text)


def remount_and_write(mountpoint, path):
    check(libc.mount(None, mountpoint.encode(), None, MS_REMOUNT | MS_BIND, None))
    with open(path, "ab") as f:
        f.write(b"\nHACKED = True\n")
    return f"wrote {path}"


try:
    unshare()
    print("INFO new user and mount namespace", flush=True)
except OSError as e:
    print(f"INFO no new user namespace: {e}", flush=True)
attempt("remount /arrl/env rw and write", lambda: remount_and_write("/arrl/env", "/arrl/env/evaluate.py"))
attempt("remount the manifest rw and write", lambda: remount_and_write("/arrl/data/manifest.json",
                                                                       "/arrl/data/manifest.json"))
attempt("remount /arrl/data rw and write", lambda: remount_and_write("/arrl/data", "/arrl/data/manifest.json"))
print("done: remounts tried", flush=True)
