"""Filling memory through file systems: write 32 MB files into every RAM-backed or otherwise writable place
outside the work dir (/tmp, /dev/shm, /dev, /, /var/tmp, /run), bounded at 1 GiB in all. Pages of a tmpfs are
nobody's resident memory, so the watchdog's RSS check cannot see them: the sandbox must bound them itself (tmpfs
sizes, read-only elsewhere, the container's memory cgroup)."""

import os

block = b"\1" * (32 << 20)
total = 0
for directory in ("/tmp", "/dev/shm", "/dev", "/", "/var/tmp", "/run"):
    i = 0
    while total < 1 << 30:
        try:
            with open(os.path.join(directory, f"fill-{i}.bin"), "wb") as f:
                f.write(block)
        except OSError as e:
            print(f"INFO {directory} full or refused after {i} files: {e}", flush=True)
            break
        total += len(block)
        i += 1
print(f"RAMFS TOTAL {total >> 20} MB", flush=True)
