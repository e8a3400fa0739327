"""A run's tables as numbers: the Parquet export (`runs/<name>/exports/`) read into plain lists
of dicts, one per ledger row (arrl.ledger.export.TABLES), as pyarrow's `to_pylist` gives them, no
pandas; and what `arrl report`, `arrl status` and the figures compute from them (the incumbents,
the accepted edits, throughput, the learning curve, the test-split gap).

    tables = tables.read_tables(run_dir / "exports")    # {table: [row dict, ...]}

The `*_data` functions hold everything a figure shows (arrl.report.figures draws them), so
tests and notebooks can check the numbers without reading pixels.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from arrl.ledger.export import TABLES  # the exported ledger tables

CATEGORIES = ("baseline", "accepted", "discarded", "failed")
# per-run throughput columns of the experiments table; empty in a ledger from before them
THROUGHPUT = ("steps", "tokens", "tokens_per_s", "cpu_s", "cpu_share", "cores", "foreign_share")
LABEL_CHARS = 40


# -- reading --------------------------------------------------------------------------------
def read_tables(exports: Path) -> dict[str, list[dict]]:
    """Every ledger table of an export folder as a list of row dicts (a missing file: no rows)."""
    import pyarrow.parquet as pq

    exports = Path(exports)
    out = {}
    for name in TABLES:
        p = exports / f"{name}.parquet"
        out[name] = pq.read_table(p).to_pylist() if p.is_file() else []
    return out


def num(x) -> float | None:
    """A finite float, or None (missing, NaN, or text from an empty export)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def as_int(x) -> int | None:
    v = num(x)
    return int(v) if v is not None else None


def _info(row: dict) -> dict:
    try:
        info = json.loads(row.get("info") or "{}")
    except (TypeError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def shorten(text, n: int = LABEL_CHARS) -> str:
    """One line of at most n characters."""
    s = " ".join(str(text or "").split())
    return s if len(s) <= n else s[: n - 1] + "…"


# -- derived tables ---------------------------------------------------------------------------
def done_experiments(tables: dict) -> list[dict]:
    rows = [r for r in tables.get("experiments", []) if r.get("state") == "done" and as_int(r.get("id")) is not None]
    return sorted(rows, key=lambda r: as_int(r["id"]))


def accepted_edits(tables: dict) -> list[dict]:
    """Accepted edits in the order they were accepted, joined with their experiment.

    Keys: exp_id, at (the experiment whose result completed the acceptance: the last
    finished confirmation, else the candidate), prev_bpb, val_bpb, improvement (prev - new),
    summary, commit_sha, diff, created."""
    exps = {as_int(r["id"]): r for r in tables.get("experiments", []) if as_int(r.get("id")) is not None}
    confirms: dict[int, int] = {}
    for r in done_experiments(tables):
        parent = as_int(r.get("parent"))
        if r.get("kind") == "confirm" and parent is not None:
            confirms[parent] = max(confirms.get(parent, 0), as_int(r["id"]))
    out = []
    for a in sorted(tables.get("accepted", []), key=lambda a: (num(a.get("created")) or 0.0, as_int(a.get("exp_id")))):
        eid = as_int(a.get("exp_id"))
        new, prev = num(a.get("val_bpb")), num(a.get("prev_bpb"))
        if eid is None or new is None:
            continue
        e = exps.get(eid, {})
        out.append({"exp_id": eid, "at": confirms.get(eid, eid), "prev_bpb": prev, "val_bpb": new,
                    "improvement": (prev - new) if prev is not None else None, "summary": e.get("summary") or "",
                    "commit_sha": a.get("commit_sha") or "", "diff": e.get("diff") or "",
                    "created": num(a.get("created"))})
    return out


def _median(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def baseline_values(tables: dict) -> list[float]:
    vals = [num(r.get("val_bpb")) for r in done_experiments(tables) if r.get("kind") == "baseline"
            and r.get("status") == "ok"]
    return [v for v in vals if v is not None]


def baseline_value(tables: dict) -> float | None:
    """The starting incumbent's value: the median of the ok baselines (the driver's robust centre)."""
    return _median(baseline_values(tables))


def baseline_mean(tables: dict) -> float | None:
    """The plain mean of the ok baselines (the starting value of older arrl versions; see baseline_value)."""
    vals = baseline_values(tables)
    return sum(vals) / len(vals) if vals else None


def throughput(row: dict) -> dict:
    """One experiment's recorded throughput: steps, tokens, tokens_per_s, cpu_s, cpu_share, foreign_share
    (the share of its cores other processes took) (None when not recorded, e.g. a ledger from before they
    were) and cores ("" = not pinned or not recorded)."""
    out = {k: num(row.get(k)) for k in THROUGHPUT if k != "cores"}
    for k in ("steps", "tokens"):
        out[k] = as_int(out[k])
    out["cores"] = row.get("cores") if isinstance(row.get("cores"), str) else ""
    return out


def throughput_rows(tables: dict) -> list[dict]:
    """Finished experiments that recorded any throughput, in id order: {id, kind, status, steps, tokens,
    tokens_per_s, cpu_s, cpu_share, cores, foreign_share}."""
    out = []
    for r in done_experiments(tables):
        t = throughput(r)
        if any(t[k] is not None for k in ("steps", "tokens_per_s", "cpu_share")):
            out.append({"id": as_int(r["id"]), "kind": r.get("kind"), "status": r.get("status"), **t})
    return out


def throughput_summary(rows: list[dict]) -> dict:
    """Medians over throughput rows: {"n", "steps", "tokens_per_s", "cpu_share"} (None where none recorded)."""
    return {"n": len(rows), **{k: _median(r.get(k) for r in rows) for k in ("steps", "tokens_per_s", "cpu_share")}}


def _events(tables: dict, kind: str) -> list[dict]:
    out = []
    for e in sorted(tables.get("events", []), key=lambda e: as_int(e.get("id")) or 0):
        if e.get("kind") != kind:
            continue
        try:
            data = json.loads(e.get("data") or "{}")
        except (TypeError, ValueError):
            data = {}
        out.append(data if isinstance(data, dict) else {})
    return out


def contended_reruns(tables: dict) -> list[dict]:
    """The `contended` events: one per attempt that got too little compute and was re-run
    ({exp, attempt, cpu_share, tokens_per_s, reference, reason})."""
    return _events(tables, "contended")


def incumbent_runs(tables: dict, exp_id: int | None) -> list[dict]:
    """The finished ok runs an incumbent stands on: the ok baselines for the starting incumbent (or any
    baseline id), else the runs its `accepted_runs` event names, else the candidate and its confirmations."""
    done = done_experiments(tables)
    by_id = {as_int(r["id"]): r for r in done}
    row = by_id.get(exp_id)
    if row is None or row.get("kind") == "baseline":
        return [r for r in done if r.get("kind") == "baseline" and r.get("status") == "ok"]
    ids = None
    for ev in _events(tables, "accepted_runs"):
        if as_int(ev.get("exp")) == exp_id and isinstance(ev.get("runs"), list):
            ids = [as_int(i) for i in ev["runs"]]
    if ids is None:
        ids = [exp_id] + [as_int(r["id"]) for r in done if r.get("kind") == "confirm" and as_int(r.get("parent")) == exp_id]
    return [by_id[i] for i in ids if i in by_id and by_id[i].get("status") == "ok"]


def incumbents(tables: dict) -> list[dict]:
    """Every incumbent of the run, in order: the start (the unchanged target, id = the first baseline's)
    and each accepted edit, with its val and test values.

    Keys: exp_id, at (the experiment id at which it became the incumbent: the first baseline for the
    start, else accepted_edits' `at`), start (bool), summary, val (the median of the ok baselines, or the
    accepted val_bpb as recorded), test (the median of its runs' ok test_bpb, None if none), n_test (ok
    test scores), n_failed (test scores that were not ok), gap (test - val, None unless both)."""
    base = sorted((r for r in tables.get("experiments", []) if r.get("kind") == "baseline"
                   and as_int(r.get("id")) is not None), key=lambda r: as_int(r["id"]))
    scores: dict[int, list] = {}
    for t in tables.get("test_scores", []):
        inc = as_int(t.get("incumbent_id"))
        if inc is not None:
            scores.setdefault(inc, []).append(t)
    out = []
    if base:
        out.append({"exp_id": as_int(base[0]["id"]), "at": as_int(base[0]["id"]), "start": True,
                    "summary": "the unchanged target (baselines)", "val": baseline_value(tables)})
    for a in accepted_edits(tables):
        out.append({"exp_id": a["exp_id"], "at": a["at"], "start": False, "summary": a["summary"], "val": a["val_bpb"]})
    for inc in out:
        rows = scores.get(inc["exp_id"], [])
        ok = [num(t.get("test_bpb")) for t in rows if t.get("status") == "ok"]
        ok = [v for v in ok if v is not None]
        inc["test"] = _median(ok)
        inc["n_test"] = len(ok)
        inc["n_failed"] = len(rows) - len(ok)
        inc["gap"] = inc["test"] - inc["val"] if inc["test"] is not None and inc["val"] is not None else None
    return out


def gap_data(tables: dict) -> dict:
    """Everything the gap figure draws: incumbents (incumbents(tables)) and counts {"incumbents", "scored"
    (incumbents with a test value), "test_scores" (rows of the test_scores table)}."""
    inc = incumbents(tables)
    return {"incumbents": inc, "counts": {"incumbents": len(inc), "scored": sum(i["test"] is not None for i in inc),
                                          "test_scores": len(tables.get("test_scores", []))}}


def category(row: dict, accepted_ids: set[int]) -> str:
    """baseline | accepted | discarded | failed for one finished experiment."""
    if num(row.get("val_bpb")) is None or row.get("status") == "contended":  # contended: no comparable value
        return "failed"
    if row.get("kind") == "baseline":
        return "baseline"
    eid = as_int(row["id"]) if row.get("kind") != "confirm" else as_int(row.get("parent"))
    return "accepted" if eid in accepted_ids else "discarded"


def progress_data(tables: dict) -> dict:
    """Everything the progress figure draws.

    points: {category: [(x, y or None, kind, summary), ...]}; counts: points per category and
    "total" (= finished experiments); in_flight: experiments not finished yet; incumbent:
    [(x, y), ...] step points; accepted: accepted_edits(tables); throughput: throughput_rows(tables)
    (steps, tokens/s, cpu share of each finished experiment that recorded them)."""
    acc = accepted_edits(tables)
    ids = {a["exp_id"] for a in acc}
    done = done_experiments(tables)
    points = {c: [] for c in CATEGORIES}
    for r in done:
        cat = category(r, ids)
        points[cat].append((as_int(r["id"]), None if cat == "failed" else num(r.get("val_bpb")),
                            r.get("kind") or "candidate", r.get("summary") or ""))
    counts = {c: len(points[c]) for c in CATEGORIES}
    counts["total"] = len(done)
    in_flight = sum(1 for r in tables.get("experiments", []) if r.get("state") in ("pending", "running"))
    steps = []
    start = baseline_value(tables)
    if start is None and acc:
        start = acc[0]["prev_bpb"]
    if start is not None and done:
        first = min((x for x, *_ in points["baseline"]), default=as_int(done[0]["id"]))
        steps.append((first, start))
        for a in acc:
            steps.append((a["at"], a["val_bpb"]))
        last = max(as_int(done[-1]["id"]), steps[-1][0])
        steps.append((last, steps[-1][1]))
    return {"points": points, "counts": counts, "in_flight": in_flight, "incumbent": steps, "accepted": acc,
            "throughput": throughput_rows(tables)}


def learning_data(tables: dict) -> dict:
    """Everything the learning figure draws.

    rewards: [(exp id, reward, adapter version)] of finished candidates; version_means:
    {version: (mean reward, first id, last id, n)}; updates: one dict per learner update
    (version, reward_mean, kl, clip_fraction, update_s, samples_in, ...), in version order."""
    versions = {p.get("id"): as_int(p.get("adapter_version")) or 0 for p in tables.get("proposals", [])}
    rewards = []
    for r in done_experiments(tables):
        rew = num(r.get("reward"))
        if r.get("kind") == "candidate" and rew is not None:
            rewards.append((as_int(r["id"]), rew, versions.get(r.get("proposal_id"), 0)))
    by_v: dict[int, list] = {}
    for x, rew, v in rewards:
        by_v.setdefault(v, []).append((x, rew))
    means = {v: (sum(r for _, r in xs) / len(xs), min(x for x, _ in xs), max(x for x, _ in xs), len(xs))
             for v, xs in sorted(by_v.items())}
    updates = []
    for row in sorted(tables.get("policy_versions", []), key=lambda r: as_int(r.get("version")) or 0):
        v = as_int(row.get("version"))
        if v is None:
            continue
        info = _info(row)
        m = info.get("metrics") if isinstance(info.get("metrics"), dict) else {}
        updates.append({"version": v, "reward_mean": num(info.get("reward_mean")), "kl": num(m.get("kl")),
                        "clip_fraction": num(m.get("clip_fraction")), "update_s": num(info.get("update_s")),
                        "sync_s": num(info.get("sync_s")), "samples_in": as_int(info.get("samples_in")),
                        "dropped_stale": as_int(info.get("dropped_stale")), "tokens": as_int(info.get("tokens")),
                        "loss": num(m.get("total_loss"))})
    return {"rewards": rewards, "version_means": means, "updates": updates,
            "counts": {"rewards": len(rewards), "versions": len(updates)}}

