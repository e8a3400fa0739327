"""`arrl bench research`: the loop against its baselines on one target, pool and budget.

Methods (each run `seeds` times with the same worker count, sandbox backend and budget):

    random   the loop with `[policy] kind = "random"`: uniformly random catalog edits of the
             incumbent, the same acceptance rule (baselines, noise margin, confirmation): greedy
             search from one incumbent
    population  the same edits of parents drawn from an archive of islands and niches (`[search]
             strategy = "population"`, arrl.driver.archive); islands capped at the workers
    random-search  Ray Tune drawing whole catalog settings uniformly, every trial to the end
    tune     Ray Tune over the catalog (Optuna TPE, or random sampling) with ASHA early
             stopping (`arrl.bench.tune`)
    tune-warm  the same with Optuna told every trial of earlier Tune runs first (`--warm-from`, for
             example on a family's training members: arrl.bench.family), the strong baseline of
             learning across runs
    optuna   Optuna TPE without early stopping: every trial trains to the end (Tune's FIFO scheduler)
    optuna-warm  the same, told every trial of the `--warm-from` runs first
    frozen   the loop with the vLLM policy and the learner off
    rl       the full loop: the vLLM policy and PPO on its LoRA adapter (with `--adapter-from RUN`, starting
             from that run's last adapter: `[learner] warm_start`)
    population-rl  the full loop with `[search] strategy = "population"`
    rl-frozen  the loop with the vLLM policy serving the last adapter of an earlier learning run
             (`--adapter-from RUN`, for example a perpetual run over a family's training members:
             arrl.bench.transfer), the learner off: what that run learned, measured without learning more

Every run is an ordinary run directory under `<out>/runs/` (a run that already finished is
read again, not re-run, so an interrupted benchmark continues where it stopped). From each
run the benchmark takes its sandbox runs in the order they finished (baselines, candidates
and confirmations of the loop; trials of Tune, including those ASHA stopped; never failed
edits, which train nothing, nor results reused from an identical earlier source) and
follows the best val_bpb measured so far against the run count and against the training
seconds spent. It writes `<out>/research.md` (the table), `<out>/research.png` (median and
min–max over seeds) and `<out>/research.json` (every trace).

"Experiments to reach random's best" is, per seed, the first run count at which a
method's best is at or below the median over seeds of random search's final best.

With the `simulated` sandbox the true, noiseless val_bpb of every source is known
(`arrl.worker.sandbox.simulated.value`), so each trace also follows what the method would hand a
researcher after each run — the loop's incumbent, Tune's best-measured trial — without
noise (`Trace.truth`), and the table gets a column for it after N/2 and N runs. The best
single measurement favours lucky runs and any method that measures good sources more
often; the noiseless value does not (docs/RESEARCH.md).
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from arrl import config as config_mod
from arrl import target as target_mod
from arrl.config import Config, ConfigError
from arrl.ledger.reader import open_read_only

METHODS = ("random", "population", "random-search", "tune", "tune-warm", "optuna", "optuna-warm", "frozen", "rl",
           "population-rl", "rl-frozen")
TUNE = ("random-search", "tune", "tune-warm", "optuna", "optuna-warm")
POPULATION = ("population", "population-rl")  # the loop with [search] strategy = "population"
WARM = ("tune-warm", "optuna-warm")  # told the trials of earlier Tune runs (--warm-from)
ADAPTER = ("rl", "rl-frozen")  # start from an earlier run's adapter (--adapter-from): rl may, rl-frozen must


@dataclass
class Trace:
    method: str
    seed: int
    run: str
    compute: list[float]   # cumulative training seconds after each sandbox run
    best: list[float | None]  # best val_bpb measured so far after each run
    wall_s: float
    truth: list[float | None] | None = None  # simulated sandbox: noiseless val_bpb of what is handed back after each run
    basin: list[int | None] | None = None  # a target with basins: the basin of what is handed back after each run

    def clipped(self, n: int) -> "Trace":
        return Trace(self.method, self.seed, self.run, self.compute[:n], self.best[:n], self.wall_s,
                     None if self.truth is None else self.truth[:n], None if self.basin is None else self.basin[:n])

    def reach(self, threshold: float) -> tuple[int | None, float | None]:
        """(runs, training seconds) at which the best first reaches `threshold`, or (None, None)."""
        for i, b in enumerate(self.best):
            if b is not None and b <= threshold:
                return i + 1, self.compute[i]
        return None, None


def _trace(points: list[tuple[float, float | None]]) -> tuple[list[float], list[float | None]]:
    compute, best, total, cur = [], [], 0.0, None
    for train_s, value in points:
        total += max(0.0, float(train_s or 0.0))
        if value is not None and (cur is None or value < cur):
            cur = value
        compute.append(total)
        best.append(cur)
    return compute, best


def loop_trace(d: Path, method: str, seed: int) -> Trace:
    with open_read_only(d) as db:
        rows = db.trained_in_finish_order()
        wall = db.meta("wall_s")
    compute, best = _trace([(r[1], r[2]) for r in rows])
    return Trace(method, seed, d.name, compute, best, float(wall) if wall is not None else 0.0)


def tune_trace(d: Path, seed: int, method: str = "tune") -> Trace:
    from arrl.bench import tune as tune_search

    trials = tune_search.read(d)
    compute, best = _trace([(t["train_s"], t["val_bpb"] if t["status"] == "ok" else None) for t in trials])
    meta = json.loads((d / "config.json").read_text()).get("tune", {})
    return Trace(method, seed, d.name, compute, best, float(meta.get("wall_s", 0.0)))


def _noiseless(source: str, tgt) -> float | None:
    from arrl.worker.sandbox import simulated

    v = simulated.value(source, tgt.catalog)
    return None if isinstance(v, str) else v


def _basin(source: str, tgt) -> int | None:
    from arrl.target import catalog_values
    from arrl.worker.sandbox import simulated

    vals = catalog_values(source, tgt.catalog)
    if any(vals.get(k.name) not in k.values for k in tgt.catalog):
        return None
    return simulated.basin([k.values.index(vals[k.name]) for k in tgt.catalog], tgt.catalog)


def loop_truth(d: Path, tgt, measure=_noiseless) -> list:
    """Noiseless val_bpb (simulated target) of the loop's incumbent after each of its sandbox runs: the last
    source accepted on the runs so far (the target's own train.py before any acceptance); with `measure`
    another function of that source (its basin)."""
    with open_read_only(d) as db:  # the loop's sandbox runs as the research table counts them
        finished = [r[3] for r in db.trained_in_finish_order()]
        accepted = db.accepted_in_order()
    out, i = [], 0
    value = measure(tgt.source(), tgt)
    for n in range(len(finished)):
        # an acceptance recorded before the next run finished was decided on the runs so far
        upto = finished[n + 1] if n + 1 < len(finished) else float("inf")
        while i < len(accepted) and accepted[i][1] < upto:
            value = measure((d / "experiments" / f"{accepted[i][0]:06d}" / "train.py").read_text(), tgt)
            i += 1
        out.append(value)
    return out


def tune_truth(d: Path, tgt, measure=_noiseless) -> list:
    """Noiseless val_bpb (simulated target) of Tune's best-measured trial after each trial (the target's own
    train.py until a trial is `ok`); with `measure` another function of that source."""
    from arrl.bench import tune as tune_search

    out, best = [], None
    value = measure(tgt.source(), tgt)
    for t in tune_search.read(d):
        if t["status"] == "ok" and t["val_bpb"] is not None and (best is None or t["val_bpb"] < best):
            best = t["val_bpb"]
            value = measure(tune_search.source_for(tgt, t["values"]), tgt)
        out.append(value)
    return out


def method_config(base: Config, method: str, seed: int, experiments: int, name: str,
                  adapter_from: Path | None = None) -> Config:
    cfg = copy.deepcopy(base)
    cfg.name = name
    cfg.oracle.max_experiments = experiments
    cfg.oracle.count_duplicates = False  # N runs that trained, as Tune's N trials
    if method in ("random", "population"):
        cfg.policy.kind = "random"
        cfg.policy.fmt = "catalog"
    elif method in ("frozen", "rl", "rl-frozen", "population-rl"):
        cfg.policy.kind = "vllm"
        cfg.policy.seed = seed
        cfg.learner.enabled = method in ("rl", "population-rl")
        cfg.learner.seed = seed
        cfg.learner.warm_start = str(Path(adapter_from).resolve()) if adapter_from and method in ADAPTER else None
    cfg.search.strategy = "population" if method in POPULATION else "greedy"
    if method in POPULATION:
        cfg.search.islands = min(cfg.search.islands, cfg.workers.count)
    return cfg


def _finished(d: Path) -> bool:
    if (d / "trials.jsonl").is_file():
        return True
    if not (d / "ledger.sqlite").is_file():
        return False
    with open_read_only(d) as db:
        return db.meta("status") == "finished"


def run_method(base: Config, tgt, method: str, seed: int, experiments: int, runs: Path, searcher: str,
               log=print, warm: list[dict] | None = None, adapter_from: Path | None = None) -> Trace:
    from arrl.bench import tune as tune_search
    from arrl.launch import launch

    name = f"{tgt.name}-{method}-s{seed}"
    d = runs / name
    if not _finished(d):
        if d.exists():
            import shutil

            log(f"{name}: an unfinished earlier attempt is set aside as {name}.partial")
            shutil.rmtree(runs / f"{name}.partial", ignore_errors=True)
            d.rename(runs / f"{name}.partial")
        t0 = time.time()
        if method in TUNE:
            cfg = method_config(base, method, seed, experiments, name)
            tune_search.run(cfg, tgt, experiments, runs=runs, searcher="random" if method == "random-search" else
                            searcher, seed=seed, log=log, warm=warm if method in WARM else None,
                            asha=method.startswith("tune"))
            conf = json.loads((d / "config.json").read_text())
            conf["tune"]["wall_s"] = time.time() - t0
            (d / "config.json").write_text(json.dumps(conf, indent=1) + "\n")
        else:
            launch(method_config(base, method, seed, experiments, name, adapter_from), runs=runs, log=log)
    else:
        log(f"{name}: finished earlier, read from {d}")
    trace = tune_trace(d, seed, method) if method in TUNE else loop_trace(d, method, seed)
    if base.workers.sandbox == "simulated":
        trace.truth = tune_truth(d, tgt) if method in TUNE else loop_truth(d, tgt)
        if tgt.catalog and tgt.catalog[0].basins:
            trace.basin = tune_truth(d, tgt, _basin) if method in TUNE else loop_truth(d, tgt, _basin)
    return trace


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(traces: list[Trace], experiments: int) -> dict:
    """Per method: final best (median, min, max), runs and seconds to reach random's final best."""
    traces = [t.clipped(experiments) for t in traces]
    by = {}
    for t in traces:
        by.setdefault(t.method, []).append(t)
    rand = [t.best[-1] for t in by.get("random", []) if t.best and t.best[-1] is not None]
    threshold = statistics.median(rand) if rand else None
    out = {"threshold": threshold, "experiments": experiments, "methods": {}}
    for method in [m for m in METHODS if m in by]:
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


def plot(traces: list[Trace], experiments: int, path: Path, title: str) -> None:
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
    for method in METHODS:
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


def run(target: str, experiments: int, seeds: list[int], methods: list[str], out: Path, base: Config | None = None,
        searcher: str = "optuna", log=print, warm_from: list[Path] | None = None,
        adapter_from: Path | None = None) -> dict:
    """Run (or read) every method × seed and write the table, plot and traces into `out`. `tune-warm` and
    `optuna-warm` are told every trial of the Tune runs in `warm_from` first (arrl.bench.tune.warm_trials);
    `rl-frozen` serves the last adapter of the learning run `adapter_from`, from which `rl` starts too."""
    from arrl import paths
    from arrl.bench import tune as tune_search

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method {unknown[0]!r} (known: {', '.join(METHODS)})")
    if experiments < 1:
        raise ConfigError(f"--experiments must be at least 1, got {experiments}")
    if not seeds:
        raise ConfigError("--seeds: give at least one seed")
    if any(m in WARM for m in methods) != bool(warm_from):
        raise ConfigError("--warm-from: the methods tune-warm and optuna-warm need Tune runs to start from, and only "
                          "they use them")
    if any(m in WARM for m in methods) and searcher != "optuna":
        raise ConfigError(f"--searcher {searcher}: tune-warm and optuna-warm warm-start Optuna; use --searcher optuna")
    if "rl-frozen" in methods and not adapter_from:
        raise ConfigError("--adapter-from: the rl-frozen method serves the adapter of an earlier learning run; name it")
    if adapter_from and not any(m in ADAPTER for m in methods):
        raise ConfigError("--adapter-from: only the methods rl and rl-frozen start from an adapter")
    warm = tune_search.warm_trials(warm_from) if warm_from else None
    try:
        tgt = target_mod.load(target, paths.targets_dir())
    except target_mod.TargetError as e:
        raise ConfigError(str(e)) from None
    if not tgt.catalog:
        raise ConfigError(f"target {tgt.name!r} has no catalog: random search and Tune need one")
    base = copy.deepcopy(base) if base is not None else Config()
    base.target = target
    base.policy.fmt = "catalog"
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    traces = []
    for method in methods:
        for seed in seeds:
            log(f"== {method}, seed {seed}")
            traces.append(run_method(base, tgt, method, seed, experiments, runs, searcher, log, warm, adapter_from))
    summary = summarize(traces, experiments)
    (out / "research.json").write_text(json.dumps({"target": tgt.name, "experiments": experiments, "seeds": seeds,
                                                   "searcher": searcher, "summary": summary,
                                                   "warm_from": [str(p) for p in warm_from or []],
                                                   "adapter_from": str(adapter_from) if adapter_from else None,
                                                   "traces": [t.__dict__ for t in traces]}, indent=1) + "\n")
    (out / "research.md").write_text(table(summary) + "\n")
    plot(traces, experiments, out / "research.png", f"{tgt.name}: best val_bpb, median and range over seeds")
    return summary


def base_config(path: Path | None) -> Config:
    return config_mod.load(path) if path else Config()
