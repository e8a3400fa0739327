"""Looking at a run: `arrl status`, `arrl export`, `arrl report`; and `arrl image build`."""

from __future__ import annotations

import json
from pathlib import Path

from arrl import paths
from arrl.cli.common import UsageError, existing_run, run_errors


def cmd_status(args) -> int:
    from arrl.report import status as report

    d = existing_run(args)
    with run_errors(d):
        if args.watch:
            from arrl.report import live

            return live.watch(d)
        text, _ = report.status_text(d)
    print(text, flush=True)
    return 0


def cmd_config(args) -> int:
    from arrl import config as config_mod
    from arrl.report.resolved import resolved_fields

    name = args.name
    try:
        if name is None:
            cfg = config_mod.Config()
        elif name.endswith(".toml") or Path(name).is_file():
            cfg = config_mod.load(name)
        else:
            d = (args.runs_dir or paths.runs_dir()) / name
            if not (d / "config.json").is_file():
                raise UsageError(f"{d}: no run there (no config.json)")
            try:
                data = json.loads((d / "config.json").read_text())
            except (OSError, ValueError) as e:
                raise UsageError(f"{d / 'config.json'}: unreadable ({e})") from None
            cfg = config_mod.from_dict(data, str(d / "config.json"))
            print(config_mod.to_toml(cfg, resolved_fields(d, cfg)), end="")
            return 0
    except config_mod.ConfigError as e:
        raise UsageError(str(e)) from None
    print(config_mod.to_toml(cfg), end="")
    return 0


def cmd_export(args) -> int:
    from arrl.ledger import export

    d = existing_run(args)
    with run_errors(d):
        written = export.export(d)
    for path in written:
        print(path)
    return 0


def cmd_report(args) -> int:
    from arrl.report import summary

    if len(args.names) > 1:
        return _compare(args)
    args.name = args.names[0] if args.names else None
    d = existing_run(args)
    try:
        with run_errors(d):
            written = summary.write_report(d, args.out)
    except summary.ReportError as e:
        raise UsageError(str(e)) from None
    for path in written:
        print(path)
    return 0


def _compare(args) -> int:
    from arrl.report import compare

    runs = args.runs_dir or paths.runs_dir()
    try:
        with run_errors(runs):
            written, rows = compare.write(runs, args.names, args.out, chained=args.chain)
    except compare.CompareError as e:
        raise UsageError(str(e)) from None
    for row in rows:
        print("  ".join(f"{c:>12}" if i else f"{c:<28}" for i, c in enumerate(row)))
    for path in written:
        print(path)
    return 0


def cmd_image(args) -> int:
    from arrl.worker.sandbox import docker as docker_sandbox
    from arrl.worker.sandbox import images

    try:
        tag = images.build_cpu_sandbox(docker_sandbox.client(), progress=not args.quiet)
    except (images.ImageBuildError, docker_sandbox.DockerUnavailable) as e:
        raise UsageError(" ".join(str(e).split())[:600]) from None  # the reason is often on a later line
    print(tag)
    return 0


