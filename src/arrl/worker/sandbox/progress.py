"""Reading a run's progress file without trusting it: a regular file only, never through a link,
and only the records the env's own reader can take."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path


def read_progress(path: Path, copy: Path):
    """The run's progress records, read without trusting the file the sandbox wrote.

    Only a regular file is read, never through a link (a link to a host file would bring its
    lines into the curve; a FIFO would block the host forever), and only lines that
    `env.progress.read` can take without raising go on (it skips malformed records, but JSON
    nested past the recursion limit or numbers past a float's range raise): they are copied to
    `copy`, a file of the host's, which `env.progress.read` then parses.
    """
    from env import progress as progress_mod  # the env's own reader of its protocol

    chunks, size = [], 0
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        fd = -1
    try:
        while fd >= 0 and stat.S_ISREG(os.fstat(fd).st_mode) and size < 16 << 20:
            chunk = os.read(fd, min(1 << 20, (16 << 20) - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError:
        pass
    finally:
        if fd >= 0:
            os.close(fd)
    raw = b"".join(chunks)
    lines = [line for line in raw.splitlines()[:progress_mod.MAX_RECORDS] if usable_record(line)]
    copy.write_bytes(b"".join(line + b"\n" for line in lines))
    return progress_mod.read(copy)


class ProgressTail:
    """The run's learning curve while it trains, for early abort: each poll reads only what was
    appended since the last one (re-reading the whole file, as the final `read_progress` does,
    grew with every step: a fast model's thousands of records, re-parsed twice a second, cost the
    run a tenth of its steps). The same distrust: a regular file only, never through a link,
    MAX_RECORDS lines and 16 MiB at most, only lines `usable_record` accepts."""

    MAX_BYTES = 16 << 20

    def __init__(self, path: Path):
        from env import progress as progress_mod

        self.path, self.mod = path, progress_mod
        self.offset, self.partial, self.lines = 0, b"", 0
        self.curve: list = []

    def poll(self) -> list:
        if self.offset >= self.MAX_BYTES or self.lines >= self.mod.MAX_RECORDS:
            return self.curve
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return self.curve
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return self.curve
            os.lseek(fd, self.offset, os.SEEK_SET)
            chunk = os.read(fd, self.MAX_BYTES - self.offset)
        except OSError:
            return self.curve
        finally:
            os.close(fd)
        self.offset += len(chunk)
        *complete, self.partial = (self.partial + chunk).split(b"\n")
        for line in complete:
            if self.lines >= self.mod.MAX_RECORDS:
                break
            self.lines += 1
            if not usable_record(line):
                continue
            rec = json.loads(line)
            if rec.get("event") == "step":
                try:
                    self.curve.append(self.mod.Point(float(rec["elapsed"]), int(rec["step"]),
                                                     float(rec["train_loss"]), tokens(rec.get("tokens"))))
                except (ValueError, KeyError, TypeError, OverflowError):
                    continue
        return self.curve


def usable_record(line: bytes) -> bool:
    """Whether a progress line is a JSON object whose fields env.progress.read converts without error."""
    if len(line) > 4096:
        return False
    try:
        rec = json.loads(line)
        if not isinstance(rec, dict):
            return False
        for key in ("time", "elapsed", "train_loss"):
            if key in rec:
                float(rec[key])
        if "step" in rec and not 0 <= int(rec["step"]) < 2 ** 63:  # a step count, and one the ledger can hold
            return False
    except Exception:  # noqa: BLE001 - RecursionError, OverflowError, ValueError, TypeError: all unusable
        return False
    return True


def tokens(value) -> int | None:
    """A record's `tokens`: an integer in [0, 2**63), else None (the same check as env.progress,
    which the host must not reach into)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return value
    return None
