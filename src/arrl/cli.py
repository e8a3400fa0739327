"""The `arrl` command line.

    arrl prepare [--profile P]                   prepare a profile's data (hashes, manifest)
    arrl run TARGET [--budget S] [--source FILE] train one script in the sandbox, evaluate it
    arrl launch [CONFIG] [--name N] [--address A] [--submit] [--resume NAME]   the research loop
    arrl status [NAME] [--watch]                 a run's state from its ledger
    arrl stop NAME                               ask a run's driver to stop
    arrl export NAME                             Parquet tables and results.tsv of a run
    arrl report NAME                             progress.png, reward/KL plots, summary.html of a run
    arrl image build                             build the self-contained CPU sandbox image (arrl-sandbox:cpu)

Exit codes: 0 success (for `run`: status ok), 1 the run ended in another status,
2 bad input (unknown target, missing data, unreadable file, bad option): one line on
stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import sqlite3
import sys
import time
import uuid
from pathlib import Path

from arrl import paths


class UsageError(Exception):
    """Bad input from the user; printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    from env import profiles, web

    ap = _Parser(prog="arrl", description="AutoResearch-RL: an LLM policy that learns to improve train.py.")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("prepare", help="prepare a profile's data into Parquet shards with a manifest")
    p.add_argument("--profile", default="shakespeare", choices=sorted(profiles.PROFILES))
    p.add_argument("--data-home", type=Path, help="root of prepared data (default: $ARRL_DATA_HOME or ~/.cache/arrl/data)")
    p.add_argument("--base-url", default=web.DEFAULT_BASE_URL, help="web profile: base URL of the Parquet shards")
    p.add_argument("--shards", type=int, default=8, help="web profile: training shards to download")
    p.add_argument("--val-index", type=int, default=web.DEFAULT_VAL_INDEX, help="web profile: validation shard index")
    p.add_argument("--test-index", type=int, default=None,
                   help="web profile: the sealed test shard's index (default: the one before --val-index)")
    p.add_argument("--tokenizer-max-chars", type=int, default=250_000_000, help="web profile: BPE training text")
    p.add_argument("--verify", action="store_true", help="only re-check the sha256 of every prepared file")

    r = sub.add_parser("run", help="train one train.py in the sandbox and evaluate it")
    r.add_argument("target", help="target name (a folder of targets/) or path to a target folder")
    r.add_argument("--budget", type=float, help="training budget in seconds (default: the target's)")
    r.add_argument("--source", type=Path, help="run this file instead of the target's train.py")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--isolation", default="auto", choices=["auto", "bwrap", "none"])
    r.add_argument("--threads", type=int, help="CPU threads for the run (default: its cores)")
    r.add_argument("--cores", default="", help="confine the run to these CPU cores, e.g. 1 or 0-3 (default: not pinned)")
    r.add_argument("--data-home", type=Path, help="root of prepared data")
    r.add_argument("--runs-dir", type=Path, help="where run directories go (default: $ARRL_RUNS_DIR or ./runs)")
    r.add_argument("--json", action="store_true", help="print the outcome as JSON")

    la = sub.add_parser("launch", help="run the research loop (no CONFIG: the embedded CPU default)")
    la.add_argument("config", nargs="?", type=Path, help="launch config (TOML); see arrl.config")
    la.add_argument("--name", help="run name (default: <target>-<date>-<time>)")
    la.add_argument("--address", help="Ray cluster: auto, HOST:6379 or ray://HOST:10001 (default: start a local Ray);"
                                      " with --submit the dashboard, http://HOST:8265")
    la.add_argument("--submit", action="store_true", help="run on the cluster as a Ray job that survives this client "
                                                         "disconnecting; prints the job id and how to follow it")
    la.add_argument("--resume", metavar="NAME", help="continue the run NAME from its ledger")
    la.add_argument("--runs-dir", type=Path, help="where runs live (default: $ARRL_RUNS_DIR or ./runs)")

    st = sub.add_parser("status", help="a run's state: best val_bpb, experiments by status, stop reason")
    st.add_argument("name", nargs="?", help="run name (default: the most recent run)")
    st.add_argument("--watch", action="store_true", help="refresh every 2 s until the run finishes")
    st.add_argument("--runs-dir", type=Path)

    so = sub.add_parser("stop", help="ask a run's driver to stop (it finishes recording and exits)")
    so.add_argument("name")
    so.add_argument("--runs-dir", type=Path)

    ex = sub.add_parser("export", help="write a run's ledger as Parquet tables and results.tsv")
    ex.add_argument("name")
    ex.add_argument("--runs-dir", type=Path)

    rp = sub.add_parser("report", help="write a run's figures and a self-contained HTML summary")
    rp.add_argument("name", nargs="?", help="run name (default: the most recent run)")
    rp.add_argument("--out", type=Path, help="output folder (default: runs/<name>/report)")
    rp.add_argument("--runs-dir", type=Path)

    be = sub.add_parser("bench", help="measure the search: replay early abort, compare against baselines")
    bsub = be.add_subparsers(dest="bench", required=True, parser_class=_Parser)
    ab = bsub.add_parser("abort", help="replay recorded runs' learning curves under an early-abort rule")
    ab.add_argument("runs", nargs="+", metavar="RUN", help="run names (under --runs-dir) or run directories")
    ab.add_argument("--z", type=float, default=None, help="confidence of an abort (default: [search] abort_z)")
    ab.add_argument("--margin", type=float, default=None, help="loss margin (default: [search] abort_margin)")
    ab.add_argument("--every", type=float, default=None, help="check at each this fraction of the budget")
    ab.add_argument("--min-frac", type=float, default=None, help="never abort before this fraction of the budget")
    ab.add_argument("--budget", type=float, help="the runs' training budget in seconds (default: from each run)")
    ab.add_argument("--grid", action="store_true", help="replay a grid of rules and name the one to use")
    ab.add_argument("--max-false", type=float, default=0.05,
                    help="--grid: most accepted candidates a chosen rule may abort, as a fraction (default 0.05)")
    ab.add_argument("--max-lost", type=float, default=0.2,
                    help="--grid: most improvements (accepted or not) a chosen rule may abort, as a fraction (default 0.2)")
    ab.add_argument("--json", action="store_true", help="print the results as JSON")
    ab.add_argument("--runs-dir", type=Path)
    rs = bsub.add_parser("research", help="the loop against random search, Ray Tune + ASHA and a frozen policy")
    rs.add_argument("--target", required=True, help="a target with a catalog (a folder of targets/ or a path)")
    rs.add_argument("--experiments", type=int, required=True, help="sandbox runs per method and seed")
    rs.add_argument("--seeds", type=int, default=3, help="seeds per method: 0 .. S-1 (default 3)")
    rs.add_argument("--methods", default=",".join(("random", "tune", "frozen", "rl")),
                    help="comma-separated subset of random,tune,frozen,rl (default: all)")
    rs.add_argument("--config", type=Path, help="launch config every method starts from (workers, sandbox, "
                                                "budget, policy model, learner); default: arrl's defaults, with "
                                                "the simulated sandbox for the synthetic target")
    rs.add_argument("--searcher", default="optuna", choices=["optuna", "random"], help="Tune's search algorithm")
    rs.add_argument("--out", type=Path, help="output folder (default: ./bench-research/<target>)")

    sv = sub.add_parser("serve", help="serve a policy model and a trained adapter as an OpenAI-compatible API")
    sv.add_argument("--model", help="the base model: smollm2, tiny-random, a model folder or a Hugging Face id "
                                    "(default: the adapter's recorded base, else smollm2)")
    sv.add_argument("--adapter", help="an adapter folder, or RUN / RUN:VERSION (a run's learner checkpoints)")
    sv.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000)")
    sv.add_argument("--threads", type=int, help="CPU threads of the engine (default: all cores)")
    sv.add_argument("--runs-dir", type=Path)

    im = sub.add_parser("image", help="build arrl's sandbox images on the local Docker engine")
    im.add_argument("action", choices=["build"], help="build: the self-contained CPU sandbox image, offline")
    im.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


def cmd_prepare(args) -> int:
    from env import manifest, prepare, shakespeare, web

    data_dir = paths.data_dir(args.profile, args.data_home)
    try:
        if args.verify:
            m = manifest.verify(data_dir)
        else:
            src = web.Source(base_url=args.base_url, train_shards=args.shards, val_index=args.val_index,
                             test_index=args.test_index)
            kw = {"tokenizer_max_chars": args.tokenizer_max_chars} if args.profile == "web" else {}
            m = prepare.prepare(args.profile, data_dir, source=src, **kw)
    except (manifest.DataError, shakespeare.CorpusError, web.DownloadError) as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise UsageError(f"{data_dir}: {e.strerror or e}") from None
    n_train = sum(1 for f in m["files"] if f.startswith("train/"))
    print(f"profile: {m['profile']}\ndata_dir: {data_dir}\ntrain_shards: {n_train}\n"
          f"eval_tokens: {m['eval_tokens']}\ntest_eval_tokens: {m.get('test_eval_tokens', '-')}\n"
          f"data_sha256: {m['data_sha256']}")
    return 0


def cmd_run(args) -> int:
    from env import manifest

    from arrl import target as target_mod
    from arrl.sandbox import ProcessSandbox, SandboxConfig

    try:
        tgt = target_mod.load(args.target, paths.targets_dir())
    except target_mod.TargetError as e:
        raise UsageError(str(e)) from None
    if args.source is not None:
        try:
            source = args.source.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read --source {args.source}: {getattr(e, 'strerror', None) or e}") from None
    else:
        source = tgt.source()
    if args.budget is not None and args.budget <= 0:
        raise UsageError("--budget must be positive")
    data_dir = paths.data_dir(tgt.profile, args.data_home)
    try:
        meta = manifest.verify(data_dir, full=False)
    except manifest.DataError as e:
        raise UsageError(f"data for profile {tgt.profile!r} is not usable ({e}); run: arrl prepare --profile "
                         f"{tgt.profile}") from None

    from arrl import cores as cores_mod

    try:
        pinned = cores_mod.parse(args.cores)
    except cores_mod.CoreError as e:
        raise UsageError(f"--cores: {e}") from None
    if set(pinned) - set(cores_mod.available()):
        raise UsageError(f"--cores: {cores_mod.fmt(set(pinned) - set(cores_mod.available()))} not available here "
                         f"(cores {cores_mod.fmt(cores_mod.available())})")
    threads = args.threads or len(pinned) or None
    config = SandboxConfig(budget_s=args.budget or tgt.budget_s, grace_s=tgt.grace_s, memory_mb=tgt.memory_mb,
                           isolation=args.isolation, cores=cores_mod.fmt(pinned),
                           **({"threads": threads} if threads else {}))
    runs = args.runs_dir or paths.runs_dir()
    run_dir = runs / "single" / f"{time.strftime('%Y%m%d-%H%M%S')}-{tgt.name}-{uuid.uuid4().hex[:6]}"
    try:
        sandbox = ProcessSandbox(paths.env_dir(), data_dir, config)
        run_dir.mkdir(parents=True)
    except (RuntimeError, OSError) as e:
        raise UsageError(str(e)) from None
    pin = f", cores {config.cores} ({sandbox.pinning or 'not enforced'})" if config.cores else ""
    print(f"running {tgt.name} (budget {config.budget_s:g} s, isolation {sandbox.isolation}{pin}) in {run_dir}",
          file=sys.stderr, flush=True)
    try:
        outcome = sandbox.run(source, run_dir, seed=args.seed, env_hash=manifest.env_hash(meta))
    finally:
        sandbox.close()
    (run_dir / "outcome.json").write_text(json.dumps(outcome.to_dict(), indent=2) + "\n")
    if args.json:
        print(json.dumps(outcome.to_dict()))
    else:
        print(outcome.summary())
        print(f"run_dir: {run_dir}")
        if outcome.isolation == "none":
            print("warning: no bubblewrap: the run had network access and could write the env", file=sys.stderr)
    return 0 if outcome.status == "ok" else 1


def _existing_run(args) -> Path:
    runs = args.runs_dir or paths.runs_dir()
    if getattr(args, "name", None):
        d = runs / args.name
    else:
        cands = sorted((p for p in runs.glob("*/ledger.sqlite")), key=lambda p: p.stat().st_mtime)
        if not cands:
            raise UsageError(f"no runs in {runs}")
        d = cands[-1].parent
    if not (d / "ledger.sqlite").is_file():
        raise UsageError(f"{d}: no run there (no ledger.sqlite)")
    return d


@contextlib.contextmanager
def _run_errors(d: Path | None):
    """A broken run directory or ledger as one line naming the file (the files are only read, never repaired)."""
    try:
        yield
    except ConnectionError:
        raise  # Ray unreachable (an OSError too): the caller names the address
    except sqlite3.DatabaseError as e:
        where = d / "ledger.sqlite" if d and (d / "ledger.sqlite").exists() else d or "the ledger"
        if "full" in str(e):
            raise UsageError(f"{where}: the disk is full ({e}); nothing recorded was changed: free space and "
                             "run `arrl launch --resume`") from None
        raise UsageError(f"{where}: the ledger is unreadable ({e}); it was left untouched") from None
    except OSError as e:
        where = e.filename or d or "the run directory"
        if e.errno == errno.ENOSPC:
            raise UsageError(f"{where}: no space left on the device; nothing recorded was lost: free space and run "
                             "`arrl launch --resume`") from None
        raise UsageError(f"{where}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{d}: a file of the run is not valid JSON ({e})") from None


def _client_auth(address: str | None, submit: bool) -> None:
    """Ray Client and the Jobs client send the cluster's auth token only when RAY_AUTH_MODE=token in
    their own process (read when ray is imported); a head started with `ray start` on a machine with a
    token (~/.ray/auth_token) requires it. Turn it on when a token is at hand and the user has not
    chosen a mode."""
    import os

    if not (submit or (address or "").startswith("ray://")) or "RAY_AUTH_MODE" in os.environ:
        return
    token = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or os.path.isfile(token):
        os.environ["RAY_AUTH_MODE"] = "token"


def cmd_launch(args) -> int:
    _client_auth(args.address, args.submit)  # before ray is imported
    from arrl import config as config_mod
    from arrl.config import ConfigError
    from arrl.launch import launch
    from arrl.learner import LearnerError
    from arrl.store import StoreError
    from arrl.target import TargetError

    try:
        cfg = config_mod.load(args.config) if args.config else config_mod.Config()
        if args.name:
            cfg.name = args.name
        if args.submit:
            return _submit(cfg, args)
        runs = args.runs_dir or paths.runs_dir()
        with _run_errors(runs / args.resume if args.resume else runs):
            reason, d = launch(cfg, resume=args.resume, address=args.address, runs=args.runs_dir)
    except (ConfigError, StoreError, TargetError, LearnerError) as e:
        raise UsageError(str(e)) from None
    except ConnectionError as e:  # Ray could not be reached at --address
        raise UsageError(f"cannot connect to Ray at {args.address or 'a local Ray'}: {str(e).splitlines()[0][:200]}") \
            from None
    print(f"run directory: {d}")
    return 0


def _submit(cfg, args) -> int:
    from arrl import jobs

    try:
        job_id, name, url = jobs.submit(cfg, args.config, args.resume, args.address, args.runs_dir)
    except jobs.SubmitError as e:
        raise UsageError(str(e)) from None
    print(f"submitted run {name} as Ray job {job_id} to {url} (the dashboard's Jobs tab shows it too)")
    for what, cmd in jobs.follow_commands(job_id, name, url, args.runs_dir):
        print(f"  {what + ':':<31}{cmd}")
    return 0


def cmd_serve(args) -> int:
    from arrl import serve

    try:
        p = serve.plan(args.model, args.adapter, args.runs_dir or paths.runs_dir())
        serve.serve(p, args.port, threads=args.threads)
    except serve.ServeError as e:
        raise UsageError(str(e)) from None
    return 0


def cmd_status(args) -> int:
    from arrl import report

    d = _existing_run(args)
    while True:
        with _run_errors(d):
            text, finished = report.status_text(d)
        if args.watch:
            print("\033[2J\033[H", end="")
        print(text, flush=True)
        if not args.watch or finished:
            return 0
        time.sleep(2.0)


def cmd_stop(args) -> int:
    d = _existing_run(args)
    with _run_errors(d):
        (d / "STOP").write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
    print(f"asked {d.name} to stop; the driver stops at its next check")
    return 0


def cmd_export(args) -> int:
    from arrl import export

    d = _existing_run(args)
    with _run_errors(d):
        written = export.export(d)
    for path in written:
        print(path)
    return 0


def cmd_report(args) -> int:
    from arrl import summary

    d = _existing_run(args)
    try:
        with _run_errors(d):
            written = summary.write_report(d, args.out)
    except summary.ReportError as e:
        raise UsageError(str(e)) from None
    for path in written:
        print(path)
    return 0


def cmd_image(args) -> int:
    from arrl import docker_sandbox, images

    try:
        tag = images.build_cpu_sandbox(docker_sandbox.client(), progress=not args.quiet)
    except (images.ImageBuildError, docker_sandbox.DockerUnavailable) as e:
        raise UsageError(" ".join(str(e).split())[:600]) from None  # the reason is often on a later line
    print(tag)
    return 0


def cmd_bench(args) -> int:
    if args.bench == "abort":
        return _bench_abort(args)
    return _bench_research(args)


def _bench_abort(args) -> int:
    from arrl import replay
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
    from arrl import research
    from arrl.config import ConfigError, load

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.seeds < 1:
        raise UsageError(f"--seeds {args.seeds}: give at least 1")
    try:
        base = load(args.config) if args.config else None
        if base is None and Path(args.target).name == "synthetic":
            from arrl.config import Config

            base = Config()
            base.workers.sandbox = "simulated"
        out = args.out or Path.cwd() / "bench-research" / Path(args.target).name
        summary = research.run(args.target, args.experiments, list(range(args.seeds)), methods, out, base,
                               args.searcher)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    print(research.table(summary))
    for name in ("research.md", "research.png", "research.json"):
        print(out / name)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        return {"prepare": cmd_prepare, "run": cmd_run, "launch": cmd_launch, "status": cmd_status,
                "stop": cmd_stop, "export": cmd_export, "report": cmd_report,
                "image": cmd_image, "bench": cmd_bench, "serve": cmd_serve}[args.command](args)
    except UsageError as e:
        print(f"arrl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("arrl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
