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

The loop methods take `[search] early_abort` from the base config (`--config`; `--early-abort` turns it
on), as Tune's ASHA stops trials: with it on, a loop candidate that trails its parent's curve is stopped
at a checkpoint (the simulated sandbox stops there too), and its seconds up to the stop are what it cost.

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
import time
from dataclasses import dataclass
from pathlib import Path

from arrl import config as config_mod
from arrl import target as target_mod
from arrl.config import Config, ConfigError
from arrl.bench.scoreboard import plot, summarize, table
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
