"""Devices: create block and character device nodes in the work dir (the host's disk, /dev/mem), which would be
real devices on the host's file system, and open raw devices (memory, disks, the kernel log, consoles). All must be
refused."""

import os
import stat


def attempt(what, fn):
    try:
        got = fn()
    except Exception as e:  # noqa: BLE001 - a failure is the sandbox working
        print(f"BLOCKED {what}: {type(e).__name__}: {e}", flush=True)
        return None
    print(f"ESCAPED {what}: {got!r}"[:300], flush=True)
    return got


def read(path):
    with open(path, "rb") as f:
        return f.read(16)


for name, kind, major, minor in (("disk", stat.S_IFBLK, 8, 0), ("vdisk", stat.S_IFBLK, 253, 0),
                                 ("mem", stat.S_IFCHR, 1, 1), ("kmsg", stat.S_IFCHR, 1, 11)):
    path = f"/arrl/work/{name}"
    attempt(f"mknod {path}", lambda path=path, kind=kind, major=major, minor=minor: os.mknod(
        path, kind | 0o666, os.makedev(major, minor)) or read(path))
for path in ("/dev/mem", "/dev/kmem", "/dev/port", "/dev/kmsg", "/dev/sda", "/dev/vda", "/dev/nvme0n1", "/dev/tty0",
             "/dev/console", "/dev/fuse", "/dev/net/tun"):
    attempt(f"read {path}", lambda path=path: read(path))
print("done: devices tried", flush=True)
