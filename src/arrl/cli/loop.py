"""`arrl launch` (the loop, here or as a Ray job), `arrl learn` (a learner trained offline on past runs), `arrl serve`
(the policy server alone), `arrl stop` and `arrl track` (what a run's trackers missed, sent from its ledger)."""

from __future__ import annotations

import time
from pathlib import Path

from arrl import paths
from arrl.cli.common import UsageError, existing_run, run_errors


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
    from arrl.learner.learner import LearnerError
    from arrl.ledger.store import StoreError
    from arrl.target import TargetError

    try:
        cfg = config_mod.load(args.config) if args.config else config_mod.Config()
        if args.name:
            cfg.name = args.name
        if args.warm_start:
            if args.resume:
                raise ConfigError("--warm-start starts a new run; a resumed run keeps where it started from")
            cfg.learner.warm_start = args.warm_start
        if args.submit:
            return _submit(cfg, args)
        runs = args.runs_dir or paths.runs_dir()
        with run_errors(runs / args.resume if args.resume else runs):
            reason, d = launch(cfg, resume=args.resume, address=args.address, runs=args.runs_dir,
                               track=_track_overrides(args))
    except (ConfigError, StoreError, TargetError, LearnerError) as e:
        raise UsageError(str(e)) from None
    except ConnectionError as e:  # Ray could not be reached at --address
        raise UsageError(f"cannot connect to Ray at {args.address or 'a local Ray'}: {str(e).splitlines()[0][:200]}") \
            from None
    print(f"run directory: {d}")
    return 0


def _track_overrides(args) -> dict:
    """[track] fields set on the command line (`--mlflow`, `--wandb`, `--webhook`)."""
    return {k: getattr(args, k) for k in ("mlflow", "wandb", "webhook") if getattr(args, k, None)}


def cmd_track(args) -> int:
    """Send what a run's trackers and webhook have not received, from its ledger (a run that stopped while one
    was down, or a tracker added after the run)."""
    import json

    from arrl import config as config_mod, track
    from arrl.config import ConfigError
    from arrl.cli.common import existing_run
    from arrl.report.resolved import resolved_fields

    d = existing_run(args)
    try:
        cfg = config_mod.from_dict(json.loads((d / "config.json").read_text()), str(d / "config.json"))
        for k, v in _track_overrides(args).items():
            setattr(cfg.track, k, v)
        track.check(cfg)
        with run_errors(d):
            box = track.outbox_for(cfg, d, resolved=resolved_fields(d, cfg))
            if box is None:
                raise ConfigError(f"{d.name}: no tracker configured; name one with --mlflow, --wandb or --webhook")
            box.sync()  # one pass over everything unsent, however long it takes
            left = box.close()
    except ConfigError as e:
        raise UsageError(str(e)) from None
    print(f"track: {d.name}: {'everything sent' if not left else f'{left} item(s) still unsent'}")
    return 0 if not left else 1


def _submit(cfg, args) -> int:
    from arrl import jobs

    try:
        job_id, name, url = jobs.submit(cfg, args.config, args.resume, args.address, args.runs_dir,
                                        _track_overrides(args))
    except jobs.SubmitError as e:
        raise UsageError(str(e)) from None
    print(f"submitted run {name} as Ray job {job_id} to {url} (the dashboard's Jobs tab shows it too)")
    for what, cmd in jobs.follow_commands(job_id, name, url, args.runs_dir):
        print(f"  {what + ':':<31}{cmd}")
    return 0


def cmd_serve(args) -> int:
    from arrl.policy import serve

    try:
        p = serve.plan(args.model, args.adapter, args.runs_dir or paths.runs_dir())
        serve.serve(p, args.port, threads=args.threads)
    except serve.ServeError as e:
        raise UsageError(str(e)) from None
    return 0


def cmd_learn(args) -> int:
    import json

    from arrl import config as config_mod
    from arrl.config import ConfigError
    from arrl.driver import offline
    from arrl.learner.learner import LearnerError

    runs = args.runs_dir or paths.runs_dir()
    try:
        if args.config:
            cfg = config_mod.load(args.config)
        else:
            first = runs / args.sources[0] / "config.json"
            if not first.is_file():
                raise ConfigError(f"--from {args.sources[0]}: no run {args.sources[0]!r} in {runs}")
            cfg = config_mod.from_dict(json.loads(first.read_text()), str(first))
        cfg.learner.warm_start = args.warm_start
        with run_errors(runs):
            d = offline.learn(args.name, args.sources, cfg, runs, passes=args.passes)
    except (ConfigError, LearnerError, ValueError) as e:
        raise UsageError(" ".join(str(e).split())) from None
    print(f"learner: {d} (start a run from it: arrl launch CONFIG --warm-start {args.name})")
    return 0


def cmd_stop(args) -> int:
    d = existing_run(args)
    with run_errors(d):
        (d / "STOP").write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
    print(f"asked {d.name} to stop; the driver stops at its next check")
    return 0


