"""A run's figures, built from the tables of its Parquet export (`runs/<name>/exports/`).

The same functions serve `arrl report` (arrl.report.summary) and notebooks/analysis.ipynb; the numbers
they draw come from arrl.report.tables:

    tables = report_tables.read_tables(run_dir / "exports")    # {table: [row dict, ...]}, no pandas
    fig = figures.progress_figure(tables, name="night-1", target="tiny")
    png = figures.png_bytes(fig, figures.progress_data(tables)["counts"])

Tables are plain lists of dicts, one per ledger row (arrl.ledger.export.TABLES), as pyarrow's
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

from arrl.report.tables import gap_data, learning_data, progress_data, shorten

COLORS = {"baseline": "#1f77b4", "accepted": "#2ca02c", "discarded": "#9a9a9a", "failed": "#7a7a7a",
          "incumbent": "#d62728", "val": "#1f77b4", "test": "#ff7f0e", "gap": "#9467bd"}
MARKERS = {"baseline": "s", "candidate": "o", "confirm": "D"}
MAX_LABELS = 30  # the most recent accepted edits are labelled; more would overlap


# -- drawing ----------------------------------------------------------------------------------
def new_figure(w: float, h: float):
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
    fig = new_figure(11, 6)
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
    fig = new_figure(11, 7)
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
    fig = new_figure(11, 6)
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
