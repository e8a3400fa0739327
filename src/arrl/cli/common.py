"""What every command shares: the one-line usage error, and finding a run and what went wrong in it."""

from __future__ import annotations

import contextlib
import errno
import json
from pathlib import Path

from arrl import paths
from arrl.ledger.reader import DatabaseError


class UsageError(Exception):
    """Bad input from the user; printed as one line, exit code 2."""


def existing_run(args) -> Path:
    runs = args.runs_dir or paths.runs_dir()
    if getattr(args, "name", None):
        d = runs / args.name
    else:
        cands = sorted((p for p in runs.glob("*/ledger.sqlite")), key=lambda p: p.stat().st_mtime)
        if not cands:
            raise UsageError(f"no runs in {runs}")
        d = cands[-1].parent
    if not (d / "ledger.sqlite").is_file():
        raise UsageError(f"{d}: no run there (no ledger.sqlite)")
    return d


@contextlib.contextmanager
def run_errors(d: Path | None):
    """A broken run directory or ledger as one line naming the file (the files are only read, never repaired)."""
    try:
        yield
    except ConnectionError:
        raise  # Ray unreachable (an OSError too): the caller names the address
    except DatabaseError as e:
        where = d / "ledger.sqlite" if d and (d / "ledger.sqlite").exists() else d or "the ledger"
        if "full" in str(e):
            raise UsageError(f"{where}: the disk is full ({e}); nothing recorded was changed: free space and "
                             "run `arrl launch --resume`") from None
        raise UsageError(f"{where}: the ledger is unreadable ({e}); it was left untouched") from None
    except OSError as e:
        where = e.filename or d or "the run directory"
        if e.errno == errno.ENOSPC:
            raise UsageError(f"{where}: no space left on the device; nothing recorded was lost: free space and run "
                             "`arrl launch --resume`") from None
        raise UsageError(f"{where}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{d}: a file of the run is not valid JSON ({e})") from None


