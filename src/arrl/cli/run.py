"""`arrl prepare` (the data) and `arrl run` (one script in the sandbox, no loop)."""

from __future__ import annotations

import json
import sys
import time
import uuid

from arrl import paths
from arrl.cli.common import UsageError


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
    from arrl.worker.sandbox.process import ProcessSandbox
    from arrl.worker.sandbox.config import SandboxConfig

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

    from arrl.ops import cores as cores_mod

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


