"""Reading a run back: the status view (`arrl status`) and the exports (`arrl export`).

Exports go to `runs/<name>/exports/`: one Parquet file per ledger table (experiments,
proposals, accepted, policy_versions, samples, events) and `results.tsv` in autoresearch's column
layout `commit val_bpb memory_gb status description`, where status is keep (accepted),
discard (ran, not accepted) or crash (anything that did not produce a val_bpb), and
commit is the short git sha of an accepted edit or `e<experiment id>` otherwise.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

TABLES = ("experiments", "proposals", "accepted", "policy_versions", "samples", "events")


def _connect(d: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"file:{d / 'ledger.sqlite'}?mode=ro", uri=True, timeout=10)
    db.row_factory = sqlite3.Row
    return db


def _has(db, table: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone() is not None


def _meta(db, key, default=None):
    row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return json.loads(row[0]) if row else default


def status_text(d: Path) -> tuple[str, bool]:
    """A readable summary of the run in `d`, and whether it has finished."""
    db = _connect(d)
    try:
        cfg = json.loads((d / "config.json").read_text())
        state = _meta(db, "status", "starting")
        counts = dict(db.execute("SELECT status, COUNT(*) FROM experiments WHERE state='done' GROUP BY status"))
        inflight = db.execute("SELECT COUNT(*) FROM experiments WHERE state='running'").fetchone()[0]
        pending = db.execute("SELECT COUNT(*) FROM experiments WHERE state='pending'").fetchone()[0]
        base = [r[0] for r in db.execute("SELECT val_bpb FROM experiments WHERE kind='baseline' AND status='ok'")]
        acc = db.execute("SELECT a.exp_id, a.val_bpb, a.prev_bpb, e.summary FROM accepted a JOIN experiments e "
                         "ON e.id=a.exp_id ORDER BY a.created").fetchall()
        ran = db.execute("SELECT COUNT(*) FROM experiments WHERE kind!='baseline' AND state='done' AND status NOT IN "
                         "('edit_failed','rejected')").fetchone()[0]
        busy = db.execute("SELECT COALESCE(SUM(wall_s), 0) FROM experiments WHERE state='done'").fetchone()[0]
        version = db.execute("SELECT MAX(adapter_version) FROM proposals").fetchone()[0]
        learned = db.execute("SELECT version, info FROM policy_versions ORDER BY version DESC LIMIT 1").fetchone()
        used = db.execute("SELECT COALESCE(SUM(used), 0), COUNT(*) - COALESCE(SUM(used), 0) FROM samples").fetchone() \
            if _has(db, "samples") else (0, 0)
        wall = _meta(db, "wall_s", 0.0) or 0.0
        noise = _meta(db, "noise")
        reason = _meta(db, "stop_reason")
    finally:
        db.close()
    workers = cfg["workers"]["count"]
    lines = [f"run {d.name}: {state}" + (f" ({reason})" if reason else ""),
             f"target {cfg['target']}, policy {cfg['policy']['kind']} ({cfg['policy']['fmt']}), {workers} worker(s)"]
    if base:
        start = sum(base) / len(base)
        best = acc[-1]["val_bpb"] if acc else start
        lines.append(f"best val_bpb {best:.4f} (baseline {start:.4f}"
                     + (f", noise sigma {noise['sigma']:.4f}" if noise else "") + f"), {len(acc)} accepted")
    cap = cfg["oracle"]["max_experiments"]
    lines.append(f"experiments run {ran}" + (f" / {cap}" if cap else "") + f", in flight {inflight}, "
                 f"pending {pending}; proposals from policy version {version or 0}")
    if learned:
        info = json.loads(learned[1])
        m = info.get("metrics") or {}
        lines.append(f"learner: adapter v{learned[0]} ({'served' if info.get('loaded_at') else 'not yet served'}), "
                     f"{used[0]} samples trained, {used[1]} dropped; last update: reward {info.get('reward_mean', 0):+.2f}"
                     f", kl {m.get('kl', float('nan')):.4f}, clip {m.get('clip_fraction', float('nan')):.2f}, "
                     f"{info.get('update_s', 0):.1f} s")
    if wall:
        lines.append(f"wall {wall:.0f} s, worker busy fraction {busy / (workers * wall):.0%}")
        if cap and 0 < ran < cap:
            lines.append(f"ETA to the experiment budget: {(cap - ran) * wall / ran:.0f} s")
    lines.append("by status: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none yet"))
    for a in acc[-5:]:
        lines.append(f"  accepted exp {a['exp_id']}: {a['prev_bpb']:.4f} -> {a['val_bpb']:.4f}  {a['summary'] or ''}"
                     [:120])
    return "\n".join(lines), state == "finished"


def export(d: Path) -> list[Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = d / "exports"
    out.mkdir(exist_ok=True)
    db = _connect(d)
    paths = []
    try:
        for table in (t for t in TABLES if _has(db, t)):  # a ledger from an older arrl may lack a table
            rows = [dict(r) for r in db.execute(f"SELECT * FROM {table}")]
            cols = [c[1] for c in db.execute(f"PRAGMA table_info({table})")]
            arrays = {c: [r[c] for r in rows] for c in cols}
            t = pa.table(arrays) if rows else pa.table({c: pa.array([], pa.string()) for c in cols})
            p = out / f"{table}.parquet"
            pq.write_table(t, p)
            paths.append(p)
        acc = {r["exp_id"]: r["commit_sha"] for r in db.execute("SELECT exp_id, commit_sha FROM accepted")}
        lines = ["commit\tval_bpb\tmemory_gb\tstatus\tdescription"]
        for r in db.execute("SELECT * FROM experiments WHERE state='done' ORDER BY id"):
            if r["id"] in acc:
                commit, status = (acc[r["id"]] or "")[:7] or f"e{r['id']:06d}", "keep"
            else:
                commit = f"e{r['id']:06d}"
                status = "discard" if r["status"] == "ok" else "crash"
            bpb = f"{r['val_bpb']:.6f}" if r["val_bpb"] is not None else "0.000000"
            mem = f"{(r['peak_rss_mb'] or 0) / 1024:.1f}"
            desc = f"[{r['kind']}] " + ("" if r["status"] == "ok" else f"{r['status']}: ") + (r["summary"] or "")
            lines.append("\t".join([commit, bpb, mem, status, " ".join(desc.split())[:200]]))
        p = out / "results.tsv"
        p.write_text("\n".join(lines) + "\n")
        paths.append(p)
    finally:
        db.close()
    return paths


def wait_finished(d: Path, timeout: float) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if _meta_file(d, "status") == "finished":
            return True
        time.sleep(0.5)
    return False


def _meta_file(d: Path, key: str):
    db = _connect(d)
    try:
        return _meta(db, key)
    finally:
        db.close()
