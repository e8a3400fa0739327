"""Looking at a run: `arrl status`, `arrl export`, `arrl report`; and `arrl image build`."""

from __future__ import annotations

import time

from arrl.cli.common import UsageError, existing_run, run_errors


def cmd_status(args) -> int:
    from arrl.report import status as report

    d = existing_run(args)
    while True:
        with run_errors(d):
            text, finished = report.status_text(d)
        if args.watch:
            print("\033[2J\033[H", end="")
        print(text, flush=True)
        if not args.watch or finished:
            return 0
        time.sleep(2.0)


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

    d = existing_run(args)
    try:
        with run_errors(d):
            written = summary.write_report(d, args.out)
    except summary.ReportError as e:
        raise UsageError(str(e)) from None
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


