"""Surveying what the sandbox can reach: walk the visible file system (all of it but /proc, /sys and the read-only
system and Python trees) and report any writable directory besides the work dir and the scratch file systems
(every writable place is a way to persist or to use memory outside the limit), any run ledger or git repository,
any data shard outside the training split, any Unix socket, and the test's canary file."""

import os
import stat
import sys

ALLOWED_WRITABLE = ("/arrl/work", "/tmp", "/dev/shm", "/dev/mqueue")
CANARY_NAME = "{{CANARY_NAME}}"
SKIP = {"/proc", "/sys", "/usr", os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)}


def allowed(path):
    return any(path == a or path.startswith(a + "/") for a in ALLOWED_WRITABLE)


def writable(directory):
    probe = os.path.join(directory, f".arrl-probe-{os.getpid()}")
    try:
        with open(probe, "x"):
            pass
    except OSError:
        return False
    os.unlink(probe)
    return True


findings = []
dirs = 0
for dirpath, dirnames, filenames in os.walk("/"):
    dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in SKIP]
    dirs += 1
    if not allowed(dirpath) and writable(dirpath):
        findings.append(f"writable directory {dirpath}")
    if ".git" in dirnames:
        findings.append(f"git repository {dirpath}")
    for name in filenames:
        path = os.path.join(dirpath, name)
        if name == "ledger.sqlite" or name == CANARY_NAME:
            findings.append(f"file {path}")
        elif name.endswith(".parquet") and not path.startswith("/arrl/data/train/"):
            findings.append(f"shard outside the training split {path}")
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                findings.append(f"unix socket {path}")
        except OSError:
            pass
print(f"INFO walked {dirs} directories", flush=True)
for f in findings:
    print(f"ESCAPED {f}", flush=True)
if not findings:
    print("BLOCKED nothing outside the run in reach", flush=True)
print("done: file system surveyed", flush=True)
