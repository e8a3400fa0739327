"""`arrl status --watch`: a live view of a run in the terminal, drawn with rich and redrawn in place.

It shows each worker's experiment with its elapsed time against the budget and its last training loss (from
the driver's live file, arrl.driver.live), the best val_bpb over the run's experiments, the recent outcomes,
and the policy's and the learner's state. It reads the ledger read-only and never writes. Ctrl-C quits and
leaves the last frame on the screen; the view ends by itself once the run has finished. Where stdout is not
a terminal it prints plain lines instead: the status once, then one line per finished experiment and
acceptance, then the final status.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from arrl.driver import live as live_mod
from arrl.ledger.reader import open_read_only
from arrl.report import compare

RECENT = 8
BLOCKS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 60


def snapshot(d: Path) -> dict:
    """Everything one frame shows, read from the run's files."""
    with open_read_only(d) as db:
        cfg = json.loads((d / "config.json").read_text())
        snap = {"name": d.name, "cfg": cfg, "state": db.meta("status", "starting"), "reason": db.meta("stop_reason"),
                "noise": db.meta("noise"), "wall": db.meta("wall_s", 0.0) or 0.0,
                "recent": [dict(r) for r in db.recent_experiments(RECENT)],
                "counts": db.counts(), "accepted": db.accepted_count(),
                "proposals_from": db.newest_proposal_version() or 0}
        last = db.last_policy_version()
        snap["version"] = last[0] if last else 0
        snap["served"] = bool(last and json.loads(last[1] or "{}").get("loaded_at"))
        snap["waiting"] = db.pending_count()
        snap["summaries"] = {r["id"]: r["summary"] for r in db.running_experiments()}
    snap["best"] = [(n, v) for n, _, v in compare.series(d)]
    snap["live"] = live_mod.read(d)
    return snap


def spark(values: list[float], width: int = SPARK_WIDTH) -> str:
    """A one-line chart, lower values as lower blocks (sampled down to `width` columns)."""
    if not values:
        return ""
    if len(values) > width:
        values = [values[int(i * len(values) / width)] for i in range(width - 1)] + [values[-1]]
    lo, hi = min(values), max(values)
    span = hi - lo or 1.0
    return "".join(BLOCKS[min(len(BLOCKS) - 1, int((v - lo) / span * (len(BLOCKS) - 1) + 0.5))] for v in values)


def render(s: dict, now: float | None = None):
    """One frame (a rich renderable)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    now = time.time() if now is None else now
    cfg = s["cfg"]
    head = Text(f"arrl {s['name']}: {s['state']}" + (f" ({s['reason']})" if s["reason"] else ""), style="bold")
    sigma = (s["noise"] or {}).get("sigma")
    sub = Text(f"target {cfg['target']}, policy {cfg['policy']['kind']}, {cfg['workers']['count']} worker(s); "
               + (f"sigma {sigma:.4f}; " if isinstance(sigma, (int, float)) else "")
               + f"{s['accepted']} accepted; wall {s['wall']:.0f} s")
    workers = Table(title="workers", title_justify="left", expand=False)
    for col in ("worker", "experiment", "elapsed / budget", "step", "loss"):
        workers.add_column(col, justify="right" if col in ("step", "loss") else "left")
    live = s["live"] or {}
    for w in live.get("workers", []):
        last = w.get("last") or [None, None, None]
        started, budget = w.get("started"), w.get("budget_s")
        el = (now - started) if started else None
        bar = _bar(el, budget)
        workers.add_row(f"worker-{w['worker']}", f"exp {w['exp']} {(s['summaries'].get(w['exp']) or '')[:40]}", bar,
                        "-" if last[1] is None else str(last[1]), "-" if last[2] is None else f"{last[2]:.4f}")
    if not live:
        workers.add_row("-", "no live state (the driver is not running)", "", "", "")
    elif not live.get("workers"):
        workers.add_row("-", "all idle (proposing, learning or between runs)", "", "", "")
    best = s["best"]
    curve = Text("best val_bpb: " + (f"{best[0][1]:.4f} -> {best[-1][1]:.4f} over {best[-1][0]} runs  "
                                     + spark([v for _, v in best]) if best else "no baselines yet"))
    recent = Table(title="recent outcomes", title_justify="left")
    for col in ("exp", "kind", "status", "val_bpb", "reward", "edit"):
        recent.add_column(col, justify="right" if col in ("exp", "val_bpb", "reward") else "left")
    for r in s["recent"]:
        recent.add_row(str(r["id"]), r["kind"], r["status"] or "", _f(r["val_bpb"], ".4f"), _f(r["reward"], "+.2f"),
                       (r["summary"] or "")[:50])
    lrn = live.get("learner")
    learner = ("learner: " + ("down (policy frozen)" if lrn["dead"] else "updating" if lrn["busy"] else "idle")
               if lrn else "learner: off")
    served = "base model" if not s["version"] else "served" if s["served"] else "not yet served"
    policy = Text(f"policy: adapter v{s['version']} ({served}); proposals from v{s['proposals_from']}; {learner}"
                  + ("; proposing" if live.get("fetching") else ""))
    return Group(head, sub, workers, curve, recent, policy)


def _bar(elapsed: float | None, budget: float | None, width: int = 20) -> str:
    if elapsed is None or not budget:
        return "starting"
    frac = max(0.0, min(1.0, elapsed / budget))
    return f"{'#' * int(frac * width):<{width}} {elapsed:5.0f} / {budget:.0f} s"


def _f(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def watch(d: Path, interval: float = 1.0, out=None) -> int:
    out = out or sys.stdout
    if out.isatty():
        return _live(d, interval)
    return _plain(d, interval, out)


def _live(d: Path, interval: float) -> int:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    try:
        with Live(render(snapshot(d)), console=console, auto_refresh=False, transient=False) as view:
            while True:
                s = snapshot(d)
                view.update(render(s), refresh=True)
                if s["state"] == "finished":
                    return 0
                time.sleep(interval)
    except KeyboardInterrupt:
        console.print("stopped watching; the run goes on (`arrl status` for a summary)")
        return 0


def _plain(d: Path, interval: float, out) -> int:
    from arrl.report.status import status_text

    text, finished = status_text(d)
    print(text, file=out, flush=True)
    if finished:
        return 0
    seen = {r["id"] for r in snapshot(d)["recent"]}
    accepted = None
    try:
        while not finished:
            time.sleep(interval)
            s = snapshot(d)
            for r in reversed(s["recent"]):
                if r["id"] not in seen:
                    seen.add(r["id"])
                    print(f"exp {r['id']} {r['kind']} {r['status']} val_bpb {_f(r['val_bpb'], '.4f')} reward "
                          f"{_f(r['reward'], '+.2f')} {(r['summary'] or '')[:80]}", file=out, flush=True)
            if accepted is not None and s["accepted"] > accepted:
                print(f"accepted: best val_bpb now {s['best'][-1][1]:.4f}", file=out, flush=True)
            accepted = s["accepted"]
            finished = s["state"] == "finished"
        print(status_text(d)[0], file=out, flush=True)
    except KeyboardInterrupt:
        pass
    return 0
