"""`arrl report RUN1 RUN2 ...`: several runs on the same axes, the best val_bpb against experiments run and
against training seconds, with a table of each run's figures. `--chain` puts them end to end in the order
given (a run, then the run warm-started from it), so a lineage reads as one curve.

The best val_bpb is the start's (the median of the run's ok baselines) until the first acceptance, then each
accepted value from the moment it was accepted: what the run would have handed back had it stopped there.
Experiments and training seconds count runs that trained (baselines and confirmations included; a result
answered from the ledger or refused before a sandbox is not a run).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from arrl.ledger.reader import open_read_only


class CompareError(Exception):
    """A run cannot be compared; the message names it."""


def series(d: Path) -> list[tuple[int, float, float]]:
    """(runs trained so far, training seconds so far, best val_bpb then) after each finished run that trained."""
    with open_read_only(d) as db:
        base = [r["val_bpb"] for r in db.baselines(done=True, ok=True)]
        rows = db.finished_in_order()
        acc = db.accepted_times()
    best = statistics.median(base) if base else None
    out, i, n, secs = [], 0, 0, 0.0
    for _, t, train_s, trained in rows:
        while i < len(acc) and acc[i][0] <= t:
            best = acc[i][1]
            i += 1
        if not trained:
            continue
        n, secs = n + 1, secs + float(train_s)
        if best is not None:
            out.append((n, secs, best))
    return out


def load(runs_dir: Path, names: list[str]) -> list[dict]:
    out = []
    for name in names:
        d = runs_dir / name
        if not (d / "ledger.sqlite").is_file():
            raise CompareError(f"{d}: no run there (no ledger.sqlite)")
        cfg = json.loads((d / "config.json").read_text())
        s = series(d)
        with open_read_only(d) as db:
            lineage = db.meta("lineage")
        out.append({"name": name, "target": cfg.get("target", ""), "series": s, "lineage": lineage})
    targets = {r["target"] for r in out}
    if len(targets) > 1:
        raise CompareError(f"the runs have different targets ({', '.join(sorted(targets))}); their val_bpb are not "
                           f"comparable")
    return out


def chain(runs: list[dict]) -> list[dict]:
    """Each run's axes continued from the end of the run before it."""
    n0, s0, out = 0, 0.0, []
    for r in runs:
        out.append({**r, "series": [(n + n0, s + s0, v) for n, s, v in r["series"]]})
        if r["series"]:
            n0, s0 = n0 + r["series"][-1][0], s0 + r["series"][-1][1]
    return out


def table(runs: list[dict]) -> list[list[str]]:
    rows = [["run", "runs trained", "training s", "start", "best", "gain"]]
    for r in runs:
        s = r["series"]
        if not s:
            rows.append([r["name"], "0", "0", "-", "-", "-"])
            continue
        rows.append([r["name"], str(s[-1][0] - s[0][0] + 1), f"{s[-1][1] - s[0][1]:.0f}", f"{s[0][2]:.4f}",
                     f"{s[-1][2]:.4f}", f"{s[-1][2] - s[0][2]:+.4f}"])
    return rows


def figure(runs: list[dict], chained: bool = False):
    from arrl.report.figures import new_figure

    fig = new_figure(13, 5.5)
    axes = fig.subplots(1, 2, sharey=True)
    for r in runs:
        s = r["series"]
        if not s:
            continue
        for ax, x in zip(axes, ([n for n, _, _ in s], [t for _, t, _ in s])):
            ax.step(x, [v for _, _, v in s], where="post", lw=1.8, label=r["name"], gid=f"run/{r['name']}")
    axes[0].set_xlabel("runs trained" + (" (chained)" if chained else ""))
    axes[1].set_xlabel("training seconds" + (" (chained)" if chained else ""))
    axes[0].set_ylabel("best val_bpb (lower is better)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{len(runs)} runs on target {runs[0]['target']}" if runs else "no runs", fontweight="bold")
    return fig


def write(runs_dir: Path, names: list[str], out: Path | None = None, chained: bool = False) -> tuple[list, list]:
    """compare.png, compare.tsv and series.tsv; returns (their paths, the table's rows)."""
    from arrl.report.figures import png_bytes

    runs = load(runs_dir, names)
    if chained:
        runs = chain(runs)
    out = Path(out) if out is not None else runs_dir / "compare" / "+".join(names)[:150]
    out.mkdir(parents=True, exist_ok=True)
    rows = table(runs)
    (out / "compare.png").write_bytes(png_bytes(figure(runs, chained),
                                                   {"runs": names, "chained": chained,
                                                    "series": {r["name"]: r["series"] for r in runs}}))
    (out / "compare.tsv").write_text("".join("\t".join(r) + "\n" for r in rows))
    series_rows = ["run\truns_trained\ttraining_s\tbest_val_bpb\n"] + [
        f"{r['name']}\t{n}\t{s:.2f}\t{v:.6f}\n" for r in runs for n, s, v in r["series"]]
    (out / "series.tsv").write_text("".join(series_rows))
    return [out / "compare.png", out / "compare.tsv", out / "series.tsv"], rows
