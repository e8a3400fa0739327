"""The Ray Tune baseline: the target's catalog searched by Tune (Optuna TPE or random sampling) with ASHA.

Without ASHA (`run(asha=False)`, the research methods `optuna` and `optuna-warm`) every trial trains to the
end: plain Optuna TPE driven through Tune, the same trainable and the same records.

What a researcher would otherwise run: a hyperparameter search over the same knobs the
catalog policy may set, with early stopping. Each trial sets the sampled knob values in
the target's train.py (the catalog edit format, `arrl.driver.edits`) and trains it in the same
sandbox backend, budget and limits as the loop's workers (`arrl.worker.worker.ExperimentWorker`
used in process inside the trial), `[workers] count` trials at a time, each holding
`[workers] gpus_per_worker`. At each tenth of the budget the trial reports its current
training loss (the mean of the curve's last points) as `loss`: ASHA (time attribute: the
checkpoint index, grace 2 of 10, reduction factor 3) stops the worse trials there, and the
searcher learns from the last `loss` each trial reached. A trial that fails (crash, OOM,
timeout, invalid metric) reports `loss` = FAILED_LOSS so the searcher avoids its region.

`run()` writes `runs/<name>/config.json` (the launch config plus `tune` settings), Tune's own
files under `runs/<name>/tune/`, and `runs/<name>/trials.jsonl`: one line per trial with its
knob values, status (`ok`, `stopped` by ASHA, or the failure), val_bpb (finished trials),
training seconds used, start/finish times. `arrl.bench.research` reads that file next to the
loop's ledgers. The seconds of a stopped trial are those up to its last report; the moments
between that report and the stop are not counted (well under one checkpoint).
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from pathlib import Path

from arrl import target
from arrl.driver import edits
from arrl.worker import abort as extrapolate
from arrl.config import Config, ConfigError

CHECKPOINTS = 10
FAILED_LOSS = 1e3
SEARCHERS = ("optuna", "random")


def source_for(tgt, values: dict) -> str:
    """train.py with the catalog knobs set to `values` (knobs already at that value are left alone)."""
    src = tgt.source()
    current = target.catalog_values(src, tgt.catalog)
    change = {k: v for k, v in values.items() if current.get(k) != v}
    if not change:
        return src
    res = edits.apply(src, json.dumps(change), fmt="catalog", catalog=tgt.catalog)
    if res.source is None:
        raise ConfigError(f"tune: the catalog values {change} do not apply to {tgt.train_py}: {res.message}")
    return res.source


def _trainable():
    from ray import tune

    class CatalogTrial(tune.Trainable):
        """One catalog configuration trained in the sandbox; a step per tenth of the budget."""

        def setup(self, config, target=None, worker=None, seed=0):
            self._target, self._worker_kw, self._seed = target, worker, seed
            self._start(config)

        def _start(self, config):
            from arrl import target as target_mod
            from arrl.worker.worker import ExperimentWorker

            if not hasattr(self, "_box"):
                tgt_dir = Path(self._target)
                self._tgt = target_mod.load(str(tgt_dir), tgt_dir.parent)
                self._box = ExperimentWorker(**self._worker_kw)
            self.values = dict(config)
            self.source = source_for(self._tgt, self.values)
            self.budget = self._box.sandbox_config.budget_s
            self._cond = threading.Condition()
            self._curve, self._outcome, self._iter = [], None, 0
            self._stop = threading.Event()
            self._t0 = time.time()
            seed = self._seed * 100_003 + zlib.crc32(self.trial_id.encode()) % 100_000
            self._thread = threading.Thread(target=self._train, args=(seed,), daemon=True)
            self._thread.start()

        def _train(self, seed):
            box = self._box.sandbox()
            run_dir = self._box.scratch / f"{self.trial_id}-{int(time.time() * 1000) % 10**8}"

            def on_progress(curve):
                pts = extrapolate.points(curve)
                with self._cond:
                    self._curve = pts
                    self._cond.notify_all()
                return "stopped by ASHA" if self._stop.is_set() else None

            try:
                outcome = box.run(self.source, run_dir, seed=seed, env_hash=self._box.env_hash(),
                                  on_progress=on_progress).to_dict()
            except Exception as e:  # noqa: BLE001 - an infrastructure failure ends the trial as a crash
                outcome = {"status": "crash", "message": f"{type(e).__name__}: {e}"[:300]}
            import shutil

            shutil.rmtree(run_dir, ignore_errors=True)
            with self._cond:
                self._outcome = outcome
                self._cond.notify_all()

        def _loss(self) -> float:
            losses = [p[2] for p in self._curve[-max(3, len(self._curve) // 10):] if p[2] is not None]
            return float(sum(losses) / len(losses)) if losses else FAILED_LOSS

        def step(self):
            self._iter += 1
            mark = self._iter / CHECKPOINTS * self.budget
            with self._cond:
                self._cond.wait_for(lambda: self._outcome is not None
                                    or (self._curve and self._curve[-1][0] >= mark and self._iter < CHECKPOINTS))
                out = self._outcome
                common = {"started_at": self._t0, "compute_s": time.time() - self._t0, "values": self.values}
                if out is None:
                    return {"loss": self._loss(), "elapsed": self._curve[-1][0], **common}
            ok = out.get("status") == "ok"
            train_s = (out.get("timings") or {}).get("train_s") or common["compute_s"]
            return {"loss": self._loss() if ok else FAILED_LOSS, "val_bpb": out.get("val_bpb") if ok else None,
                    "status": out.get("status"), "message": (out.get("message") or "")[:200], "train_s": train_s,
                    "done": True, **common}

        def _end_run(self):
            self._stop.set()
            self._thread.join(timeout=self._box.sandbox_config.budget_s + self._box.sandbox_config.grace_s + 60)

        def cleanup(self):  # the trial's end: its worker's scratch folder goes with it
            self._end_run()
            self._box.close()

        def save_checkpoint(self, checkpoint_dir):
            return {"values": self.values}  # nothing to resume: a sandbox run cannot be paused

        def load_checkpoint(self, checkpoint):
            pass

        def reset_config(self, new_config):  # a reused actor keeps its worker for the next trial
            self._end_run()
            self._start(new_config)
            return True

    return CatalogTrial


def run(cfg: Config, tgt, trials: int, runs: Path | None = None, searcher: str = "optuna", seed: int = 0,
        log=print, warm: list[dict] | None = None, asha: bool = True) -> Path:
    """Run the Tune baseline for `trials` trials; returns the run directory (see the module doc).

    `warm` (Optuna only): past trials, each {"values": {knob: value}, "loss": float}, told to the Optuna study
    before the first new trial (Optuna's warm start: they are not run again). `warm_trials` reads them from
    earlier Tune runs, for example on other members of a family (arrl.bench.family)."""
    import os

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no per-run summary boxes on the console
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from arrl import paths
    from arrl.worker.settings import sandbox_settings

    if searcher not in SEARCHERS:
        raise ConfigError(f"tune: searcher {searcher!r} is not one of {', '.join(SEARCHERS)}")
    if not tgt.catalog:
        raise ConfigError(f"tune: target {tgt.name!r} has no catalog to search")
    if trials < 1:
        raise ConfigError(f"tune: trials must be at least 1, got {trials}")
    points = _warm_points(warm or [], tgt)
    if points and searcher != "optuna":
        raise ConfigError(f"tune: a warm start needs the optuna searcher, not {searcher!r}")
    name = cfg.name or f"{tgt.name}-tune-{time.strftime('%Y%m%d-%H%M%S')}"
    d = (runs or paths.runs_dir()) / name
    if (d / "trials.jsonl").exists():
        raise ConfigError(f"{d}: a Tune baseline named {name!r} exists; pick another name")
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({**cfg.to_dict(), "name": name,
                                               "tune": {"searcher": searcher, "trials": trials, "seed": seed,
                                                        "warm": len(points), "asha": asha,
                                                        "checkpoints": CHECKPOINTS}},
                                              indent=1) + "\n")
    w = cfg.workers
    worker = {"name": "tune", "profile": tgt.profile, "sandbox": sandbox_settings(cfg, tgt), "backend": w.sandbox,
              "catalog": tgt.catalog, "run": name, "image": w.image}
    space = {k.name: tune.choice(list(k.values)) for k in tgt.catalog}
    if points:
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        # a space of its own: Optuna is told the past trials' results, which needs its distributions up front
        search = OptunaSearch({k.name: optuna.distributions.CategoricalDistribution(list(k.values))
                               for k in tgt.catalog}, metric="loss", mode="min", seed=seed,
                              points_to_evaluate=[p["values"] for p in points],
                              evaluated_rewards=[p["loss"] for p in points])
        space = {}
        log(f"tune baseline {name}: Optuna warm-started with {len(points)} past trials")
    elif searcher == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search = OptunaSearch(seed=seed)
    else:
        from ray.tune.search.basic_variant import BasicVariantGenerator

        search = BasicVariantGenerator(random_state=seed)
    # without ASHA, Tune's FIFO scheduler: every trial reports at each checkpoint and trains to the end
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=CHECKPOINTS, grace_period=2, reduction_factor=3)
                 if asha else FIFOScheduler())
    owns_ray = not ray.is_initialized()
    if owns_ray:
        ray.init(address="local", num_cpus=max(os.cpu_count() or 1, w.count + 1), logging_level="ERROR",
                 log_to_driver=False, **({"num_gpus": int(w.count * w.gpus_per_worker + 0.999)}
                                         if w.gpus_per_worker else {}))
    try:
        trainable = tune.with_resources(
            tune.with_parameters(_trainable(), target=str(tgt.dir), worker=worker, seed=seed),
            {"cpu": 1, "gpu": w.gpus_per_worker})
        tuner = tune.Tuner(trainable, param_space=space,
                           tune_config=tune.TuneConfig(metric="loss", mode="min", search_alg=search,
                                                       scheduler=scheduler, num_samples=trials,
                                                       max_concurrent_trials=w.count, reuse_actors=True),
                           run_config=tune.RunConfig(name="tune", storage_path=str(d.resolve()), verbose=0,
                                                      checkpoint_config=tune.CheckpointConfig(
                                                          checkpoint_at_end=False, checkpoint_frequency=0)))
        log(f"tune baseline {name}: target {tgt.name}, {trials} trials, {searcher}{' + ASHA' if asha else ''}, "
            f"{w.count} at a time, "
            f"sandbox {w.sandbox}")
        grid = tuner.fit()
    finally:
        if owns_ray:
            ray.shutdown()
    records = []
    for res in grid:
        m = res.metrics or {}
        status = m.get("status") or ("error" if res.error else "stopped")
        records.append({"trial": m.get("trial_id", ""), "values": m.get("values") or res.config, "status": status,
                        "val_bpb": m.get("val_bpb"), "loss": m.get("loss"),
                        "train_s": m.get("train_s") or m.get("compute_s") or 0.0,
                        "iterations": m.get("training_iteration", 0), "started": m.get("started_at"),
                        "finished": (m.get("started_at") or 0.0) + (m.get("compute_s") or 0.0),
                        "message": m.get("message") or (str(res.error)[:200] if res.error else "")})
    records.sort(key=lambda r: (r["finished"], r["trial"]))
    with open(d / "trials.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    done = [r for r in records if r["val_bpb"] is not None]
    best = min(done, key=lambda r: r["val_bpb"]) if done else None
    log(f"tune baseline {name}: {len(records)} trials, {sum(r['status'] == 'stopped' for r in records)} stopped by "
        f"ASHA, best val_bpb {best['val_bpb']:.4f} {best['values']}" if best else
        f"tune baseline {name}: {len(records)} trials, none finished")
    return d


def _warm_points(warm: list[dict], tgt) -> list[dict]:
    """The past trials that set exactly the target's knobs to catalog values; an error if some were given and
    none does (before anything is written or started)."""
    if not warm:
        return []
    known = {k.name: set(k.values) for k in tgt.catalog}
    points = [t for t in warm if set(t["values"]) == set(known) and all(v in known[k] for k, v in t["values"].items())]
    if not points:
        raise ConfigError(f"tune: none of the {len(warm)} warm-start trials sets exactly {tgt.name!r}'s knobs to its "
                          "values")
    return points


def warm_trials(dirs: list[Path]) -> list[dict]:
    """Every trial of these Tune runs that reported a loss (finished, stopped by ASHA at its last report, or
    failed at FAILED_LOSS), as {"values", "loss"}: what `run(warm=...)` tells Optuna."""
    out = []
    for d in dirs:
        if not (Path(d) / "trials.jsonl").is_file():
            raise ConfigError(f"--warm-from {d}: not a Tune baseline run (no trials.jsonl)")
        out += [{"values": t["values"], "loss": float(t["loss"])} for t in read(d) if t.get("loss") is not None]
    return out


def read(d: Path) -> list[dict]:
    """The trials of a Tune baseline run, in the order they finished."""
    path = Path(d) / "trials.jsonl"
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable ({e})") from None
