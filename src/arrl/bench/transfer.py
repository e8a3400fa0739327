"""`arrl bench transfer`: learning across runs, measured on a family's held-out members (issue 23, item 5).

A family written by `arrl bench family DIR` (arrl.bench.family) has training members and held-out ones.
1. The past: on every training member, Tune (Optuna TPE + ASHA, arrl.bench.tune) runs N trials, seed 0.
2. With `rl-frozen`, the perpetual run: the learning loop (`rl`, the vLLM policy of the base config and
   its learner) runs N experiments on each training member in turn, each run warm-started from the last
   adapter of the one before ([learner] warm_start), seed 0.
3. On every held-out member, `arrl bench research` runs the chosen methods for every seed with N runs
   each: random search (the loop); Tune cold (`tune`, TPE + ASHA) and warm-started with every trial of
   step 1 (`tune-warm`); Optuna TPE without ASHA, cold and warm (`optuna`, `optuna-warm`); and, given a
   policy in the base config, the loop with the base policy frozen (`frozen`), learning (`rl`, from
   step 2's last adapter where there is one), or serving step 2's last adapter frozen (`rl-frozen`).

No held-out member is ever a source of steps 1 and 2: the warm starts see the training members only. Every
run is an ordinary run directory under DIR/transfer/ (training/<member>/, perpetual/<member>/ and
held_out/<member>/), so an interrupted benchmark continues where it stopped, as `arrl bench research` does. The result, per
held-out member and seed: each method's best val_bpb after N runs, and the runs it took to reach random
search's median final best on that member (the research table's bar); and the median over every member
and seed. It is written to DIR/transfer/transfer.md and transfer.json.
"""

from __future__ import annotations

import copy
import json
import statistics
from pathlib import Path

from arrl.bench import research
from arrl.config import Config, ConfigError
from arrl.ledger.reader import open_read_only


def run(family_dir: Path, experiments: int, seeds: list[int], methods: list[str], base: Config | None = None,
        log=print) -> dict:
    family_dir = Path(family_dir)
    try:
        info = json.loads((family_dir / "family.json").read_text())
        train, held_out = list(info["train"]), list(info["held_out"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{family_dir}: not a family written by `arrl bench family` ({e})") from None
    unknown = [m for m in methods if m not in research.METHODS]
    if unknown:
        raise ConfigError(f"unknown method {unknown[0]!r} (known: {', '.join(research.METHODS)})")
    if "random" not in methods:
        raise ConfigError("--methods: random is the bar every method is measured against; include it")
    base = copy.deepcopy(base) if base is not None else Config()
    base.workers.sandbox = "simulated"
    out = family_dir / "transfer"
    past = []
    if any(m in research.WARM for m in methods):
        for name in train:
            log(f"== the past: Tune on training member {name}")
            research.run(str(family_dir / name), experiments, [0], ["tune"], out / "training" / name, base, log=log)
            past.append(out / "training" / name / "runs" / f"{name}-tune-s0")
    adapter = perpetual(family_dir, train, experiments, base, out, log) if "rl-frozen" in methods else None
    rows = []
    for name in held_out:
        log(f"== held-out member {name}")
        d = out / "held_out" / name
        summary = research.run(str(family_dir / name), experiments, seeds, methods, d, base, log=log,
                               warm_from=past or None, adapter_from=adapter)
        traces = json.loads((d / "research.json").read_text())["traces"]
        for seed in seeds:
            row = {"member": name, "seed": seed, "methods": {}}
            for m in methods:
                t = research.Trace(**next(t for t in traces if t["method"] == m and t["seed"] == seed))
                t = t.clipped(experiments)
                runs, _ = t.reach(summary["threshold"]) if summary["threshold"] is not None else (None, None)
                row["methods"][m] = {"best": t.best[-1] if t.best else None, "runs_to_bar": runs}
            rows.append(row)
    result = {"family": info.get("seed"), "train": train, "held_out": held_out, "experiments": experiments,
              "seeds": seeds, "methods": methods, "warm_trials": _warm_count(past),
              "perpetual": str(adapter) if adapter else None, "rows": rows}
    (out / "transfer.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "transfer.md").write_text(table(result) + "\n")
    return result


def perpetual(family_dir: Path, train: list[str], experiments: int, base: Config, out: Path, log=print) -> Path:
    """The learning loop on each training member in turn, each run starting from the last adapter of the run
    before; returns the last run's folder (whose last adapter `rl-frozen` serves on the held-out members)."""
    if base.policy.kind != "vllm" or not base.learner.enabled:
        raise ConfigError("rl-frozen: the perpetual run needs a learning policy in --config ([policy] kind 'vllm', "
                          "[learner] enabled)")
    last = None
    for name in train:
        log(f"== the perpetual run: the learning loop on training member {name}"
            + (f", starting from {last.name}" if last else ""))
        research.run(str(family_dir / name), experiments, [0], ["rl"], out / "perpetual" / name, base, log=log,
                     adapter_from=last)
        d = out / "perpetual" / name / "runs" / f"{name}-rl-s0"
        with open_read_only(d) as r:
            versions = len(r.policy_versions())
        if versions > (1 if last else 0):  # it learned: the next run starts from it
            last = d
        else:
            log(f"{d.name}: no update in {experiments} experiments; the next run starts from "
                f"{last.name if last else 'the base model'}")
    if last is None:
        raise ConfigError(f"rl-frozen: the perpetual run made no adapter in {experiments} experiments per training "
                          "member; give more --experiments or a smaller [learner] batch_size")
    return last


def _warm_count(past: list[Path]) -> int:
    from arrl.bench import tune

    return len(tune.warm_trials(past)) if past else 0


def table(result: dict) -> str:
    methods, n = result["methods"], result["experiments"]
    lines = [f"Family {result['family']}: {len(result['train'])} training members ({result['warm_trials']} Tune trials "
             f"for tune-warm), {len(result['held_out'])} held out, {n} runs per method and seed. Cells: best val_bpb "
             "after the runs / runs to reach random search's median final best on that member.", "",
             "| held-out member | seed | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for r in result["rows"]:
        lines.append(f"| {r['member']} | {r['seed']} | " + " | ".join(_cell(r["methods"][m]) for m in methods) + " |")
    med = []
    for m in methods:
        best = [r["methods"][m]["best"] for r in result["rows"] if r["methods"][m]["best"] is not None]
        reach = [r["methods"][m]["runs_to_bar"] or float("inf") for r in result["rows"]]
        med.append(f"{statistics.median(best):.4f} / {_runs(statistics.median(reach))}" if best else "—")
    lines.append("| median over all | | " + " | ".join(med) + " |")
    return "\n".join(lines)


def _cell(c: dict) -> str:
    return f"{c['best']:.4f} / {_runs(c['runs_to_bar'])}" if c["best"] is not None else "—"


def _runs(x) -> str:
    return "not reached" if x is None or x == float("inf") else f"{x:g}"
