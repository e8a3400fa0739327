"""Writing into the ledger: open a sibling run's ledger.sqlite (its host path) with sqlite3 and insert rows, or
corrupt it with raw bytes or a forged WAL file; also look for any ledger.sqlite visible inside the sandbox."""

import os
import sqlite3
import sys

LEDGER = "{{SIBLING_LEDGER}}"


def attempt(what, fn):
    try:
        got = fn()
    except Exception as e:  # noqa: BLE001 - a failure is the sandbox working
        print(f"BLOCKED {what}: {type(e).__name__}: {e}", flush=True)
        return None
    print(f"ESCAPED {what}: {got!r}"[:300], flush=True)
    return got


def insert():
    db = sqlite3.connect(f"file:{LEDGER}?mode=rw", uri=True)
    db.execute("INSERT INTO events (t, kind, data) VALUES (0, 'forged', 'by train.py')")
    db.execute("UPDATE experiments SET val_bpb = 0.0001")
    db.commit()
    return "rows written"


def raw(path, data, mode="ab"):
    with open(path, mode) as f:
        f.write(data)
    return f"wrote {path}"


def visible_files():
    """Every file in sight, outside the read-only system and Python installation trees."""
    skip = {"/proc", "/sys", "/dev", "/usr", os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)}
    for dirpath, dirnames, filenames in os.walk("/"):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skip]
        yield from (os.path.join(dirpath, n) for n in filenames)


def find_ledgers():
    found = [p for p in visible_files() if p.endswith((".sqlite", ".sqlite-wal"))]
    if not found:
        raise FileNotFoundError("no ledger visible")
    return found


attempt("sqlite insert into the sibling ledger", insert)
attempt("append garbage to the sibling ledger", lambda: raw(LEDGER, b"garbage"))
attempt("forge a WAL next to the sibling ledger", lambda: raw(LEDGER + "-wal", b"\0" * 4096, "wb"))
attempt("create a ledger at the sibling path", lambda: sqlite3.connect(LEDGER).execute("CREATE TABLE forged(x)"))
attempt("find a ledger in the sandbox", find_ledgers)
print("done: ledger writes tried", flush=True)
