"""The research benchmark's scoreboard (`arrl bench research`, arrl.bench.research): per method over seeds, the
table (`research.md`: final best, the bar and who reached it, noiseless values handed back, the basin, every seed)
and the plot (`research.png`: best val_bpb against runs and against training seconds). Methods appear in the
order they ran."""

from __future__ import annotations

import statistics
from pathlib import Path


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(traces: list, experiments: int) -> dict:
    """Per method: final best (median, min, max), runs and seconds to reach random's final best."""
    traces = [t.clipped(experiments) for t in traces]
    by = {}
    for t in traces:
        by.setdefault(t.method, []).append(t)
    rand = [t.best[-1] for t in by.get("random", []) if t.best and t.best[-1] is not None]
    threshold = statistics.median(rand) if rand else None
    out = {"threshold": threshold, "experiments": experiments, "methods": {}}
    for method in by:  # in the order the methods ran
        ts = by[method]
        finals = [t.best[-1] for t in ts if t.best and t.best[-1] is not None]
        reach = [t.reach(threshold) if threshold is not None else (None, None) for t in ts]
        out["methods"][method] = {
            "seeds": len(ts), "runs": _median([len(t.best) for t in ts]),
            "final_best_median": _median(finals), "final_best_min": min(finals) if finals else None,
            "final_best_max": max(finals) if finals else None,
            "reached": sum(r[0] is not None for r in reach),
            # a seed that never reaches the bar counts as needing more than the benchmark gave it
            "runs_to_reach_median": _median([r[0] if r[0] is not None else float("inf") for r in reach]),
            "compute_to_reach_median": _median([r[1] if r[1] is not None else float("inf") for r in reach]),
            "compute_total_median": _median([t.compute[-1] if t.compute else 0.0 for t in ts]),
            "wall_median": _median([t.wall_s for t in ts])}
        if ts and all(t.truth for t in ts):
            half = max(experiments // 2, 1)
            out["methods"][method]["truth_half_median"] = _median([t.truth[min(half, len(t.truth)) - 1] for t in ts])
            out["methods"][method]["truth_final_median"] = _median([t.truth[-1] for t in ts])
        if ts and all(t.basin for t in ts):
            out["methods"][method]["best_basin"] = sum(t.basin[-1] == 0 for t in ts)
    out["seeds"] = [{"method": t.method, "seed": t.seed, "runs": len(t.best),
                     "final_best": t.best[-1] if t.best else None,
                     "handed_back": t.truth[-1] if t.truth else None,
                     "basin": t.basin[-1] if t.basin else None} for t in traces]
    return out


def _fmt(x, spec=".4f"):
    if x is None:
        return "—"
    if x == float("inf"):
        return "not reached"
    return format(x, spec)


def table(summary: dict) -> str:
    thr, n = summary["threshold"], summary["experiments"]
    truth = any("truth_final_median" in m for m in summary["methods"].values())
    lines = [f"Bar: random search's median final best, {_fmt(thr)} val_bpb, within {n} runs.",
             "",
             "| method | seeds | runs (median) | final best val_bpb: median (min – max) | seeds reaching the bar | "
             "runs to reach it (median) | training s to reach it (median) | training s in all (median) | "
             "wall s (median) |" + (f" noiseless val_bpb handed back after {max(n // 2, 1)} / {n} runs (median) |"
                                    if truth else ""),
             "|---|---|---|---|---|---|---|---|---|" + ("---|" if truth else "")]
    for method, m in summary["methods"].items():
        row = (f"| {method} | {m['seeds']} | {_fmt(m['runs'], '.0f')} | {_fmt(m['final_best_median'])} ({_fmt(m['final_best_min'])} – "
               f"{_fmt(m['final_best_max'])}) | {m['reached']} of {m['seeds']} | "
               f"{_fmt(m['runs_to_reach_median'], '.0f')} | {_fmt(m['compute_to_reach_median'], '.1f')} | "
               f"{_fmt(m['compute_total_median'], '.1f')} | {_fmt(m['wall_median'], '.0f')} |")
        if truth:
            row += f" {_fmt(m.get('truth_half_median'))} / {_fmt(m.get('truth_final_median'))} |"
        lines.append(row)
    basins = any("best_basin" in m for m in summary["methods"].values())
    if basins:
        lines += ["", "| method | seeds whose handed-back program is in the best basin after the last run |",
                  "|---|---|"]
        lines += [f"| {method} | {m['best_basin']} of {m['seeds']} |" for method, m in summary["methods"].items()
                  if "best_basin" in m]
    seeds = summary.get("seeds") or []
    if seeds:
        cols = ["method", "seed", "runs", "final best val_bpb"] + (["noiseless val_bpb handed back"] if truth else []) \
            + (["basin handed back (0: the best)"] if basins else [])
        lines += ["", "Every seed:", "", "| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
        for r in seeds:
            cells = [r["method"], str(r["seed"]), str(r["runs"]), _fmt(r["final_best"])]
            cells += [_fmt(r["handed_back"])] if truth else []
            cells += ["—" if r["basin"] is None else str(r["basin"])] if basins else []
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(traces: list, experiments: int, path: Path, title: str) -> None:
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    warnings.filterwarnings("ignore", message="All-NaN slice", category=RuntimeWarning)
    import matplotlib.pyplot as plt
    import numpy as np

    colors = {"random": "#7f7f7f", "tune": "#1f77b4", "tune-warm": "#17becf", "optuna": "#9467bd",
              "optuna-warm": "#e377c2", "frozen": "#ff7f0e", "rl": "#2ca02c", "rl-frozen": "#bcbd22",
              "population": "#d62728", "random-search": "#8c564b", "population-rl": "#006400"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for method in dict.fromkeys(t.method for t in traces):
        ts = [t.clipped(experiments) for t in traces if t.method == method and t.best]
        if not ts:
            continue
        n = min(len(t.best) for t in ts)
        ys = np.array([[np.nan if b is None else b for b in t.best[:n]] for t in ts], dtype=float)
        x = np.arange(1, n + 1)
        med = np.nanmedian(ys, axis=0)
        axes[0].plot(x, med, color=colors[method], label=f"{method} ({len(ts)} seeds)")
        axes[0].fill_between(x, np.nanmin(ys, axis=0), np.nanmax(ys, axis=0), color=colors[method], alpha=0.15)
        # against compute: each seed's step curve on a common grid of training seconds
        top = min(t.compute[n - 1] for t in ts)
        grid = np.linspace(0, top, 200)
        cs = []
        for t, y in zip(ts, ys):
            idx = np.searchsorted(np.array(t.compute[:n]), grid, side="right") - 1
            cs.append(np.where(idx >= 0, y[np.clip(idx, 0, n - 1)], np.nan))
        cs = np.array(cs)
        with np.errstate(all="ignore"):
            axes[1].plot(grid, np.nanmedian(cs, axis=0), color=colors[method], label=method)
            axes[1].fill_between(grid, np.nanmin(cs, axis=0), np.nanmax(cs, axis=0), color=colors[method], alpha=0.15)
    axes[0].set_xlabel("sandbox runs")
    axes[1].set_xlabel("training seconds")
    for ax in axes:
        ax.set_ylabel("best val_bpb so far")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
