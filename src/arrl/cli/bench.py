"""`arrl bench abort` (replay a run's early-abort rule), `arrl bench novelty` (replay near-duplicates answered
without training, arrl.bench.novelty), `arrl bench research` (the research benchmark) and
`arrl bench family` (a family of simulated targets, arrl.bench.family) and `arrl bench transfer` (methods on its
held-out members, arrl.bench.transfer)."""

from __future__ import annotations

import json
from pathlib import Path

from arrl.cli.common import UsageError


def cmd_bench(args) -> int:
    if args.bench == "abort":
        return _bench_abort(args)
    if args.bench == "family":
        return _bench_family(args)
    if args.bench == "transfer":
        return _bench_transfer(args)
    if args.bench == "novelty":
        return _bench_novelty(args)
    return _bench_research(args)


def _bench_transfer(args) -> int:
    from arrl.bench import transfer
    from arrl.config import ConfigError, load

    if args.experiments < 1 or args.seeds < 1:
        raise UsageError(f"--experiments {args.experiments} --seeds {args.seeds}: give at least 1 of each")
    try:
        result = transfer.run(args.family, args.experiments, list(range(args.seeds)),
                              [m.strip() for m in args.methods.split(",") if m.strip()],
                              load(args.config) if args.config else None)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    print(transfer.table(result))
    return 0


def _bench_novelty(args) -> int:
    from arrl.bench import novelty, replay

    thresholds = tuple(args.thresholds) if args.thresholds else novelty.THRESHOLDS
    bad = [t for t in thresholds if t < 0]
    if bad:
        raise UsageError(f"--thresholds {bad[0]:g}: a distance is never negative")
    try:
        recs = [novelty.load(r, args.runs_dir, args.distance) for r in args.runs]
    except replay.ReplayError as e:
        raise UsageError(str(e)) from None
    results = novelty.replay(recs, thresholds)
    if args.json:
        print(json.dumps({"runs": [r.run for r in recs], "distance": args.distance,
                          "results": [r.row() for r in results],
                          "skipped": {r.run: r.skipped for r in recs}}, indent=1))
        return 0
    print(f"replayed {sum(len(r.cases) for r in recs)} new candidates from {len(recs)} run(s): "
          f"{', '.join(r.run for r in recs)}" + (" (the source distance for every pair)"
                                                 if args.distance == "source" else ""))
    for r in recs:
        for why, count in r.skipped.items():
            print(f"  {r.run}: {count} experiment(s) not replayed: {why}")
    print(novelty.distances(recs))
    print(novelty.table(results))
    return 0


def _bench_family(args) -> int:
    from arrl.bench import family

    try:
        info = family.write(args.seed, args.members, args.held_out, args.out)
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(f"family {args.seed}: {len(info['train'])} training members, {len(info['held_out'])} held out, in {args.out}")
    for name in info["train"] + info["held_out"]:
        m = info["members"][name]
        print(f"  {name}  {'held out' if name in info['held_out'] else 'train   '}  {family.in_words(m['params'])} "
              f"parameters, {family.in_words(m['tokens'])} tokens")
    return 0


def _bench_abort(args) -> int:
    from arrl.bench import replay
    from arrl.config import SearchSection

    d = SearchSection()
    rule = {"z": d.abort_z if args.z is None else args.z, "margin": d.abort_margin if args.margin is None else args.margin,
            "every": d.abort_every if args.every is None else args.every,
            "min_frac": d.abort_min_frac if args.min_frac is None else args.min_frac}
    for key, value in rule.items():
        if value < 0 or (key in ("every", "min_frac") and value > 1) or (key == "every" and value == 0):
            raise UsageError(f"--{key.replace('_', '-')} {value:g}: out of range")
    if args.budget is not None and args.budget <= 0:
        raise UsageError(f"--budget {args.budget:g}: must be positive")
    try:
        recs = [replay.load(r, args.runs_dir, args.budget) for r in args.runs]
    except replay.ReplayError as e:
        raise UsageError(str(e)) from None
    results = replay.grid(recs) if args.grid else [replay.replay(recs, **rule)]
    chosen = replay.choose(results, args.max_false, args.max_lost) if args.grid else None
    if args.json:
        print(json.dumps({"runs": [r.run for r in recs], "results": [r.row() for r in results],
                          "chosen": chosen.row() if chosen else None,
                          "skipped": {r.run: r.skipped for r in recs}}, indent=1))
        return 0
    n = sum(len(r.cases) for r in recs)
    print(f"replayed {n} candidates from {len(recs)} run(s): {', '.join(r.run for r in recs)}")
    for r in recs:
        for why, count in r.skipped.items():
            print(f"  {r.run}: {count} candidate(s) not replayed: {why}")
    print(replay.table(results))
    if not results[0].accepted:
        print("note: none of these candidates was accepted, so false aborts cannot be measured on them")
    if args.grid:
        if chosen is None:
            print(f"no rule kept false aborts at or below {100 * args.max_false:g}% of accepted candidates and lost "
                  f"improvements at or below {100 * args.max_lost:g}%")
        else:
            print(f"chosen: abort_z = {chosen.z:g}, abort_margin = {chosen.margin:g}, abort_every = {chosen.every:g}, "
                  f"abort_min_frac = {chosen.min_frac:g}: saves {100 * chosen.saved_frac:.1f}% of training compute, "
                  f"{chosen.false_aborts} of {chosen.accepted} accepted candidates and {chosen.improved_aborted} of "
                  f"{chosen.improved} improvements aborted")
    return 0


def _bench_research(args) -> int:
    from arrl.bench import research
    from arrl.config import ConfigError, load

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.seeds < 1:
        raise UsageError(f"--seeds {args.seeds}: give at least 1")
    try:
        base = load(args.config) if args.config else None
        if base is None and (_simulated(args.target) or args.early_abort):
            from arrl.config import Config

            base = Config()
            if _simulated(args.target):
                base.workers.sandbox = "simulated"
        if args.early_abort:
            base.search.early_abort = True
        out = args.out or Path.cwd() / "bench-research" / Path(args.target).name
        summary = research.run(args.target, args.experiments, list(range(args.seeds)), methods, out, base,
                               args.searcher, warm_from=args.warm_from, adapter_from=args.adapter_from)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    print(research.table(summary))
    for name in ("research.md", "research.png", "research.json"):
        print(out / name)
    return 0




def _simulated(name: str) -> bool:
    """The synthetic target, or a simulated one: a family's member or synthetic-basins (its catalog gives the
    simulated optima or basins)."""
    from arrl import paths, target

    if Path(name).name == "synthetic":
        return True
    try:
        return any(k.optimum is not None or k.basins for k in target.load(name, paths.targets_dir()).catalog)
    except target.TargetError:
        return False
