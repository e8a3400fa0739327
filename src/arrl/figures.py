"""A run's figures, built from the tables of its Parquet export (`runs/<name>/exports/`).

The same functions serve `arrl report` (arrl.summary) and notebooks/analysis.ipynb:

    tables = figures.read_tables(run_dir / "exports")    # {table: [row dict, ...]}, no pandas
    fig = figures.progress_figure(tables, name="night-1", target="tiny")
    png = figures.png_bytes(fig, figures.progress_data(tables)["counts"])

Tables are plain lists of dicts, one per ledger row (arrl.export.TABLES), as pyarrow's
`to_pylist` gives them; the figures are `matplotlib.figure.Figure` objects drawn on the Agg
canvas, never through pyplot, so nothing here touches global plotting state or needs a
display. The `*_data` functions hold everything a figure shows, so tests and notebooks can
check the numbers without reading pixels; `png_bytes` writes them into the PNG's text chunk
`arrl` (JSON) as well.

Progress figure: one point per finished experiment, x = experiment id (the ledger's order),
y = val_bpb. Baselines are blue squares; candidates circles and confirmation runs diamonds,
green when accepted (a confirmation counts with its accepted candidate), grey when discarded;
experiments without a usable val_bpb (failed edits, crashes, time-outs, runs that ended
`contended`, ...) are grey crosses in a band above the plot. The step line is the incumbent:
the median of the ok baselines, then each accepted value (as the ledger records it) from the
experiment that confirmed it.

Gap figure (only for runs with test scores): for each incumbent, x = the experiment id at which
it became the incumbent, y = its val_bpb and its test_bpb (the median of its runs' ok scores on
the sealed test split) above, and the gap test - val below (`gap_data`).
"""

from __future__ import annotations

import io
import json
import math
import statistics
from pathlib import Path

from arrl.export import TABLES  # the exported ledger tables
CATEGORIES = ("baseline", "accepted", "discarded", "failed")
COLORS = {"baseline": "#1f77b4", "accepted": "#2ca02c", "discarded": "#9a9a9a", "failed": "#7a7a7a",
          "incumbent": "#d62728", "val": "#1f77b4", "test": "#ff7f0e", "gap": "#9467bd"}
# per-run throughput columns of the experiments table; empty in a ledger from before them
THROUGHPUT = ("steps", "tokens", "tokens_per_s", "cpu_s", "cpu_share", "cores", "foreign_share")
MARKERS = {"baseline": "s", "candidate": "o", "confirm": "D"}
LABEL_CHARS = 40
MAX_LABELS = 30  # the most recent accepted edits are labelled; more would overlap


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


def _num(x) -> float | None:
    """A finite float, or None (missing, NaN, or text from an empty export)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _int(x) -> int | None:
    v = _num(x)
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
    rows = [r for r in tables.get("experiments", []) if r.get("state") == "done" and _int(r.get("id")) is not None]
    return sorted(rows, key=lambda r: _int(r["id"]))


def accepted_edits(tables: dict) -> list[dict]:
    """Accepted edits in the order they were accepted, joined with their experiment.

    Keys: exp_id, at (the experiment whose result completed the acceptance: the last
    finished confirmation, else the candidate), prev_bpb, val_bpb, improvement (prev - new),
    summary, commit_sha, diff, created."""
    exps = {_int(r["id"]): r for r in tables.get("experiments", []) if _int(r.get("id")) is not None}
    confirms: dict[int, int] = {}
    for r in done_experiments(tables):
        parent = _int(r.get("parent"))
        if r.get("kind") == "confirm" and parent is not None:
            confirms[parent] = max(confirms.get(parent, 0), _int(r["id"]))
    out = []
    for a in sorted(tables.get("accepted", []), key=lambda a: (_num(a.get("created")) or 0.0, _int(a.get("exp_id")))):
        eid = _int(a.get("exp_id"))
        new, prev = _num(a.get("val_bpb")), _num(a.get("prev_bpb"))
        if eid is None or new is None:
            continue
        e = exps.get(eid, {})
        out.append({"exp_id": eid, "at": confirms.get(eid, eid), "prev_bpb": prev, "val_bpb": new,
                    "improvement": (prev - new) if prev is not None else None, "summary": e.get("summary") or "",
                    "commit_sha": a.get("commit_sha") or "", "diff": e.get("diff") or "",
                    "created": _num(a.get("created"))})
    return out


def _median(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _baseline_values(tables: dict) -> list[float]:
    vals = [_num(r.get("val_bpb")) for r in done_experiments(tables) if r.get("kind") == "baseline"
            and r.get("status") == "ok"]
    return [v for v in vals if v is not None]


def baseline_value(tables: dict) -> float | None:
    """The starting incumbent's value: the median of the ok baselines (the driver's robust centre)."""
    return _median(_baseline_values(tables))


def baseline_mean(tables: dict) -> float | None:
    """The plain mean of the ok baselines (the starting value of older arrl versions; see baseline_value)."""
    vals = _baseline_values(tables)
    return sum(vals) / len(vals) if vals else None


def throughput(row: dict) -> dict:
    """One experiment's recorded throughput: steps, tokens, tokens_per_s, cpu_s, cpu_share, foreign_share
    (the share of its cores other processes took) (None when not recorded, e.g. a ledger from before they
    were) and cores ("" = not pinned or not recorded)."""
    out = {k: _num(row.get(k)) for k in THROUGHPUT if k != "cores"}
    for k in ("steps", "tokens"):
        out[k] = _int(out[k])
    out["cores"] = row.get("cores") if isinstance(row.get("cores"), str) else ""
    return out


def throughput_rows(tables: dict) -> list[dict]:
    """Finished experiments that recorded any throughput, in id order: {id, kind, status, steps, tokens,
    tokens_per_s, cpu_s, cpu_share, cores, foreign_share}."""
    out = []
    for r in done_experiments(tables):
        t = throughput(r)
        if any(t[k] is not None for k in ("steps", "tokens_per_s", "cpu_share")):
            out.append({"id": _int(r["id"]), "kind": r.get("kind"), "status": r.get("status"), **t})
    return out


def throughput_summary(rows: list[dict]) -> dict:
    """Medians over throughput rows: {"n", "steps", "tokens_per_s", "cpu_share"} (None where none recorded)."""
    return {"n": len(rows), **{k: _median(r.get(k) for r in rows) for k in ("steps", "tokens_per_s", "cpu_share")}}


def _events(tables: dict, kind: str) -> list[dict]:
    out = []
    for e in sorted(tables.get("events", []), key=lambda e: _int(e.get("id")) or 0):
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
    by_id = {_int(r["id"]): r for r in done}
    row = by_id.get(exp_id)
    if row is None or row.get("kind") == "baseline":
        return [r for r in done if r.get("kind") == "baseline" and r.get("status") == "ok"]
    ids = None
    for ev in _events(tables, "accepted_runs"):
        if _int(ev.get("exp")) == exp_id and isinstance(ev.get("runs"), list):
            ids = [_int(i) for i in ev["runs"]]
    if ids is None:
        ids = [exp_id] + [_int(r["id"]) for r in done if r.get("kind") == "confirm" and _int(r.get("parent")) == exp_id]
    return [by_id[i] for i in ids if i in by_id and by_id[i].get("status") == "ok"]


def incumbents(tables: dict) -> list[dict]:
    """Every incumbent of the run, in order: the start (the unchanged target, id = the first baseline's)
    and each accepted edit, with its val and test values.

    Keys: exp_id, at (the experiment id at which it became the incumbent: the first baseline for the
    start, else accepted_edits' `at`), start (bool), summary, val (the median of the ok baselines, or the
    accepted val_bpb as recorded), test (the median of its runs' ok test_bpb, None if none), n_test (ok
    test scores), n_failed (test scores that were not ok), gap (test - val, None unless both)."""
    base = sorted((r for r in tables.get("experiments", []) if r.get("kind") == "baseline"
                   and _int(r.get("id")) is not None), key=lambda r: _int(r["id"]))
    scores: dict[int, list] = {}
    for t in tables.get("test_scores", []):
        inc = _int(t.get("incumbent_id"))
        if inc is not None:
            scores.setdefault(inc, []).append(t)
    out = []
    if base:
        out.append({"exp_id": _int(base[0]["id"]), "at": _int(base[0]["id"]), "start": True,
                    "summary": "the unchanged target (baselines)", "val": baseline_value(tables)})
    for a in accepted_edits(tables):
        out.append({"exp_id": a["exp_id"], "at": a["at"], "start": False, "summary": a["summary"], "val": a["val_bpb"]})
    for inc in out:
        rows = scores.get(inc["exp_id"], [])
        ok = [_num(t.get("test_bpb")) for t in rows if t.get("status") == "ok"]
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
    if _num(row.get("val_bpb")) is None or row.get("status") == "contended":  # contended: no comparable value
        return "failed"
    if row.get("kind") == "baseline":
        return "baseline"
    eid = _int(row["id"]) if row.get("kind") != "confirm" else _int(row.get("parent"))
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
        points[cat].append((_int(r["id"]), None if cat == "failed" else _num(r.get("val_bpb")),
                            r.get("kind") or "candidate", r.get("summary") or ""))
    counts = {c: len(points[c]) for c in CATEGORIES}
    counts["total"] = len(done)
    in_flight = sum(1 for r in tables.get("experiments", []) if r.get("state") in ("pending", "running"))
    steps = []
    start = baseline_value(tables)
    if start is None and acc:
        start = acc[0]["prev_bpb"]
    if start is not None and done:
        first = min((x for x, *_ in points["baseline"]), default=_int(done[0]["id"]))
        steps.append((first, start))
        for a in acc:
            steps.append((a["at"], a["val_bpb"]))
        last = max(_int(done[-1]["id"]), steps[-1][0])
        steps.append((last, steps[-1][1]))
    return {"points": points, "counts": counts, "in_flight": in_flight, "incumbent": steps, "accepted": acc,
            "throughput": throughput_rows(tables)}


def learning_data(tables: dict) -> dict:
    """Everything the learning figure draws.

    rewards: [(exp id, reward, adapter version)] of finished candidates; version_means:
    {version: (mean reward, first id, last id, n)}; updates: one dict per learner update
    (version, reward_mean, kl, clip_fraction, update_s, samples_in, ...), in version order."""
    versions = {p.get("id"): _int(p.get("adapter_version")) or 0 for p in tables.get("proposals", [])}
    rewards = []
    for r in done_experiments(tables):
        rew = _num(r.get("reward"))
        if r.get("kind") == "candidate" and rew is not None:
            rewards.append((_int(r["id"]), rew, versions.get(r.get("proposal_id"), 0)))
    by_v: dict[int, list] = {}
    for x, rew, v in rewards:
        by_v.setdefault(v, []).append((x, rew))
    means = {v: (sum(r for _, r in xs) / len(xs), min(x for x, _ in xs), max(x for x, _ in xs), len(xs))
             for v, xs in sorted(by_v.items())}
    updates = []
    for row in sorted(tables.get("policy_versions", []), key=lambda r: _int(r.get("version")) or 0):
        v = _int(row.get("version"))
        if v is None:
            continue
        info = _info(row)
        m = info.get("metrics") if isinstance(info.get("metrics"), dict) else {}
        updates.append({"version": v, "reward_mean": _num(info.get("reward_mean")), "kl": _num(m.get("kl")),
                        "clip_fraction": _num(m.get("clip_fraction")), "update_s": _num(info.get("update_s")),
                        "sync_s": _num(info.get("sync_s")), "samples_in": _int(info.get("samples_in")),
                        "dropped_stale": _int(info.get("dropped_stale")), "tokens": _int(info.get("tokens")),
                        "loss": _num(m.get("total_loss"))})
    return {"rewards": rewards, "version_means": means, "updates": updates,
            "counts": {"rewards": len(rewards), "versions": len(updates)}}


# -- drawing ----------------------------------------------------------------------------------
def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=100, layout="constrained")


def _message(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=13, color="#555555")
    ax.set_xticks([])
    ax.set_yticks([])


def progress_figure(tables: dict, name: str = "", target: str = ""):
    """val_bpb of every finished experiment over the run, with the incumbent as a step line."""
    data = progress_data(tables)
    pts, c = data["points"], data["counts"]
    fig = _figure(11, 6)
    ax = fig.add_subplot()
    head = f"{name or 'run'}" + (f" — target {target}" if target else "")
    sub = (f"{c['total']} experiments: {len(data['accepted'])} accepted edits ({c['accepted']} runs with their "
           f"confirmations), {c['discarded']} discarded, {c['failed']} without val_bpb, {c['baseline']} baselines"
           + (f"; {data['in_flight']} pending or running" if data["in_flight"] else ""))
    fig.suptitle(head, fontsize=13, fontweight="bold")
    ax.set_title(sub, fontsize=10)
    if not c["total"]:
        _message(ax, "no experiments yet")
        return fig
    ys = [y for cat in ("baseline", "accepted", "discarded") for _, y, _, _ in pts[cat]]
    ys += [y for _, y in data["incumbent"]]
    lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
    span = max(hi - lo, 1e-3)
    band_lo, band_y, top = hi + 0.08 * span, hi + 0.15 * span, hi + 0.22 * span
    for cat in ("baseline", "discarded", "accepted"):
        for kind in ("baseline", "candidate", "confirm"):
            sel = [(x, y) for x, y, k, _ in pts[cat] if k == kind]
            if not sel:
                continue
            label = {"baseline": "baseline", "accepted": "accepted", "discarded": "discarded"}[cat]
            if kind == "confirm":
                label += " (confirmation)"
            ax.scatter([x for x, _ in sel], [y for _, y in sel], s=46 if cat == "accepted" else 30,
                       marker=MARKERS[kind], c=COLORS[cat], edgecolors="black" if cat == "accepted" else "none",
                       linewidths=0.6, alpha=0.9, zorder=3 if cat == "accepted" else 2, label=label,
                       gid=f"{cat}/{kind}")
    if pts["failed"]:
        ax.axhspan(band_lo, top, color="#bbbbbb", alpha=0.18, lw=0, zorder=0)
        ax.text(0.005, band_y, "no usable val_bpb", transform=ax.get_yaxis_transform(), va="center", ha="left",
                fontsize=8, color="#555555")
        ax.scatter([x for x, *_ in pts["failed"]], [band_y] * len(pts["failed"]), marker="x", s=30,
                   c=COLORS["failed"], linewidths=1.2, zorder=2, label="failed or contended (no val_bpb)",
                   gid="failed")
    if data["incumbent"]:
        ax.step([x for x, _ in data["incumbent"]], [y for _, y in data["incumbent"]], where="post",
                color=COLORS["incumbent"], lw=1.6, zorder=1, label="incumbent (running best)")
    for i, a in enumerate(data["accepted"][-MAX_LABELS:]):
        ax.annotate(shorten(a["summary"]), (a["exp_id"], a["val_bpb"]), xytext=(6, 10 if i % 2 == 0 else -14),
                    textcoords="offset points", fontsize=7.5, color="#1b5e20", parse_math=False,  # policy text
                    arrowprops={"arrowstyle": "-", "color": "#1b5e20", "lw": 0.5})
    ax.set_ylim(lo - 0.08 * span, top if pts["failed"] else hi + 0.08 * span)
    ax.set_xlabel("experiment id (order of creation)")
    ax.set_ylabel("val_bpb (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8, framealpha=0.85)
    return fig


def learning_figure(tables: dict, name: str = "", target: str = ""):
    """Rewards of the policy's proposals by adapter version; the learner's reward, KL and clip fraction."""
    data = learning_data(tables)
    fig = _figure(11, 7)
    gs = fig.add_gridspec(2, 2, height_ratios=[1.2, 1])
    fig.suptitle(f"{name or 'run'}" + (f" — target {target}" if target else "") + ": policy learning",
                 fontsize=13, fontweight="bold")
    ax = fig.add_subplot(gs[0, :])
    if data["rewards"]:
        cmap = _cmap()
        versions = sorted(data["version_means"])
        for i, v in enumerate(versions):
            sel = [(x, r) for x, r, vv in data["rewards"] if vv == v]
            col = cmap(i % cmap.N)
            mean, x0, x1, n = data["version_means"][v]
            ax.scatter([x for x, _ in sel], [r for _, r in sel], s=22, color=col, alpha=0.75,
                       label=f"adapter v{v}: {n} proposals, mean {mean:+.2f}", gid=f"reward/v{v}")
            ax.hlines(mean, x0 - 0.4, x1 + 0.4, colors=[col], lw=2.2, zorder=3, gid=f"mean/v{v}")
        ax.axhline(0.0, color="black", lw=0.6, alpha=0.5)
        ax.set_xlabel("experiment id")
        ax.set_ylabel("reward")
        ax.set_title("reward of each candidate, coloured by the adapter version that proposed it "
                     "(bars: per-version mean)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best", ncol=2 if len(versions) > 4 else 1)
    else:
        _message(ax, "no rewards yet")
    ups = data["updates"]
    if not ups:
        ax2 = fig.add_subplot(gs[1, :])
        _message(ax2, "no learner updates")
        return fig
    vs = [u["version"] for u in ups]
    ax2 = fig.add_subplot(gs[1, 0])
    rm = [(u["version"], u["reward_mean"]) for u in ups if u["reward_mean"] is not None]
    ax2.plot([v for v, _ in rm], [r for _, r in rm], "o-", color="#ff7f0e", label="batch reward mean",
             gid="reward_mean")
    ax2.axhline(0.0, color="black", lw=0.6, alpha=0.5)
    ax2.set_xlabel("adapter version (learner iteration)")
    ax2.set_ylabel("mean reward of the batch")
    ax2.set_title("reward of each update's training batch", fontsize=10)
    ax2.grid(alpha=0.3)
    ax3 = fig.add_subplot(gs[1, 1])
    kl = [(u["version"], u["kl"]) for u in ups if u["kl"] is not None]
    cf = [(u["version"], u["clip_fraction"]) for u in ups if u["clip_fraction"] is not None]
    h1 = ax3.plot([v for v, _ in kl], [k for _, k in kl], "o-", color="#9467bd", label="KL to base", gid="kl")
    ax3.set_xlabel("adapter version")
    ax3.set_ylabel("KL to the base model")
    ax3.grid(alpha=0.3)
    ax4 = ax3.twinx()
    h2 = ax4.plot([v for v, _ in cf], [c for _, c in cf], "s--", color="#8c564b", label="clip fraction",
                  gid="clip_fraction")
    ax4.set_ylabel("clip fraction")
    ax4.set_ylim(0, max([0.05] + [c * 1.2 for _, c in cf]))
    ax3.set_title("learner: KL and PPO clip fraction per update", fontsize=10)
    ax3.legend(h1 + h2, [h.get_label() for h in h1 + h2], fontsize=8, loc="upper left")
    if len(vs) <= 20:  # integer versions; longer runs keep matplotlib's ticks
        for a in (ax2, ax3):
            a.set_xticks(vs)
    return fig


def gap_figure(tables: dict, name: str = "", target: str = ""):
    """The val/test gap over the run: each incumbent's val_bpb and test_bpb (top) and their gap (bottom),
    x = the experiment id at which it became the incumbent."""
    data = gap_data(tables)
    inc = data["incumbents"]
    fig = _figure(11, 6)
    gs = fig.add_gridspec(2, 1, height_ratios=[1.4, 1])
    c = data["counts"]
    fig.suptitle(f"{name or 'run'}" + (f" — target {target}" if target else "") + ": validation vs sealed test",
                 fontsize=13, fontweight="bold")
    ax = fig.add_subplot(gs[0])
    ax.set_title(f"{c['incumbents']} incumbents, {c['scored']} with a test score; test = median of the "
                 f"incumbent's runs' ok test_bpb", fontsize=10)
    if not c["scored"]:
        _message(ax, "no test scores yet")
        return fig
    val = [(i["at"], i["val"]) for i in inc if i["val"] is not None]
    test = [(i["at"], i["test"]) for i in inc if i["test"] is not None]
    ax.plot([x for x, _ in val], [y for _, y in val], "o-", color=COLORS["val"], drawstyle="steps-post", lw=1.4,
            label="val_bpb (the value acceptance used)", gid="val")
    ax.plot([x for x, _ in test], [y for _, y in test], "s--", color=COLORS["test"], drawstyle="steps-post", lw=1.4,
            label="test_bpb (sealed test split)", gid="test")
    for i in inc:
        y = i["test"] if i["test"] is not None else i["val"]
        if y is not None:
            ax.annotate("start" if i["start"] else f"exp {i['exp_id']}", (i["at"], y), xytext=(4, 6),
                        textcoords="offset points", fontsize=7.5, color="#444444", parse_math=False)
    ax.set_ylabel("bpb (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax2 = fig.add_subplot(gs[1], sharex=ax)
    gap = [(i["at"], i["gap"]) for i in inc if i["gap"] is not None]
    ax2.plot([x for x, _ in gap], [g for _, g in gap], "D-", color=COLORS["gap"], drawstyle="steps-post", lw=1.2,
             label="test - val", gid="gap")
    ax2.axhline(0.0, color="black", lw=0.6, alpha=0.5)
    ax2.set_xlabel("experiment id at which the incumbent was accepted")
    ax2.set_ylabel("gap: test - val (bpb)")
    ax2.grid(alpha=0.3)
    return fig


def _cmap():
    from matplotlib import colormaps

    return colormaps["tab10"]


def png_bytes(fig, data: dict | None = None, dpi: int = 100) -> bytes:
    """The figure as PNG; `data` (JSON-able) goes into the PNG's tEXt chunk `arrl`."""
    buf = io.BytesIO()
    meta = {"Software": "arrl"}
    if data is not None:
        meta["arrl"] = json.dumps(data, sort_keys=True)
    fig.savefig(buf, format="png", dpi=dpi, metadata=meta)
    return buf.getvalue()


def png_metadata(path_or_bytes) -> dict:
    """The `arrl` JSON written by png_bytes, read back from a PNG file or bytes ({} if absent)."""
    from PIL import Image

    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, (bytes, bytearray)) else path_or_bytes
    with Image.open(src) as im:
        text = getattr(im, "text", {}) or im.info
        raw = text.get("arrl")
    return json.loads(raw) if raw else {}
