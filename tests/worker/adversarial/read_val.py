"""Reading the validation split during training: its host path, its would-be sandbox path /arrl/data/val, the
evaluator's view through /proc/<pid>/root, and a search of every visible file for the shard's bytes (by size and
sha256). The val split is never mounted in the training sandbox: nothing may be found."""

import glob
import hashlib
import os
import sys

VAL_HOST = "{{VAL_DIR}}"
VAL_SHA256 = "{{VAL_SHA256}}"
VAL_SIZE = int("{{VAL_SIZE}}")


def attempt(what, fn):
    try:
        got = fn()
    except Exception as e:  # noqa: BLE001 - a failure is the sandbox working
        print(f"BLOCKED {what}: {type(e).__name__}: {e}", flush=True)
        return None
    print(f"ESCAPED {what}: {got!r}"[:300], flush=True)
    return got


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def read_shards(pattern):
    paths = sorted(glob.glob(pattern))
    if not paths:
        raise FileNotFoundError(pattern)
    return {p: sha256(p)[:16] for p in paths}


def visible_files():
    """Every file in sight, outside the read-only system and Python installation trees."""
    skip = {"/proc", "/sys", "/dev", "/usr", os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)}
    for dirpath, dirnames, filenames in os.walk("/"):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skip]
        yield from (os.path.join(dirpath, n) for n in filenames)


def search():
    found = []
    for path in visible_files():
        try:
            if os.path.getsize(path) == VAL_SIZE and sha256(path) == VAL_SHA256:
                found.append(path)
        except OSError:
            pass
    if not found:
        raise FileNotFoundError("no copy of the validation shard in sight")
    return found


def listed():
    if "val" not in os.listdir(os.environ["ARRL_DATA_DIR"]):
        raise FileNotFoundError("no val in the data dir")
    return "val is listed"


def through_proc():
    seen = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            seen += os.listdir(f"/proc/{pid}/root/arrl/data/val")
        except OSError:
            pass
    if not seen:
        raise FileNotFoundError("no process shows a val split")
    return seen


attempt("read the val split by host path", lambda: read_shards(os.path.join(VAL_HOST, "*.parquet")))
attempt("read /arrl/data/val", lambda: read_shards("/arrl/data/val/*.parquet"))
attempt("val in the data dir listing", listed)
attempt("val through /proc/<pid>/root", through_proc)
attempt("search every visible file for the val shard", search)
print("done: val split searched", flush=True)
