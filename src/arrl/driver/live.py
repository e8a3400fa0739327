"""What is happening right now, for `arrl status --watch` (arrl.report.live): each busy worker's experiment,
its start, its budget and its last progress record (elapsed s, step, training loss), and the learner's and
the policy server's state. The driver asks the busy workers for their status every `EVERY_S` seconds without
waiting for the answer (an answer is read on a later pass) and writes `runs/<name>/live.json` whole (a temp
file, then a rename). It is a view, not a record: the ledger holds everything that counts, and a driver that
died leaves a stale file whose time says so."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import ray

EVERY_S = 1.0
FILE = "live.json"


class Live:
    def __init__(self, root: Path):
        self.path = Path(root) / FILE
        self.asked: dict = {}  # worker index -> (ObjectRef of its status(), exp id)
        self.seen: dict = {}  # worker index -> its last answer
        self.last = 0.0

    def poll(self, workers: list, inflight: dict, learning=None, fetching: bool = False) -> None:
        now = time.time()
        if now - self.last < EVERY_S:
            return
        self.last = now
        running = {w: e for e, w in inflight.values()}
        if self.asked:
            ready, _ = ray.wait([r for r, _ in self.asked.values()], num_returns=len(self.asked), timeout=0)
            for w, (ref, exp) in list(self.asked.items()):
                if ref in ready:
                    del self.asked[w]
                    try:
                        self.seen[w] = ray.get(ref).get("current")
                    except ray.exceptions.RayError:
                        self.seen[w] = None
        for w in running:
            if w not in self.asked:
                self.asked[w] = (workers[w].status.remote(), running[w])
        rows = []
        for w, exp in sorted(running.items()):
            cur = self.seen.get(w) or {}
            if cur.get("exp") != exp:
                cur = {"exp": exp}
            rows.append({"worker": w, "exp": exp, "started": cur.get("started"), "budget_s": cur.get("budget_s"),
                         "last": cur.get("last")})
        state = {"t": now, "pid": os.getpid(), "workers": rows, "idle_workers": len(workers) - len(running),
                 "fetching": fetching}
        if learning is not None:
            state["learner"] = {"busy": learning.busy(), "version": learning.version, "dead": bool(learning.dead)}
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(state))
            tmp.replace(self.path)
        except (OSError, TypeError, ValueError):
            pass  # a view only: it never stops the loop (a full disk is the ledger's problem to report)


def read(root: Path, stale_s: float = 30.0) -> dict | None:
    """The live state, or None where there is none or it is older than `stale_s` (its driver is gone)."""
    try:
        state = json.loads((Path(root) / FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or time.time() - float(state.get("t", 0)) > stale_s:
        return None
    return state
