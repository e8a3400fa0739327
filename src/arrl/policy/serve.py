"""`arrl serve`: a policy model, and optionally a trained adapter, as an OpenAI-compatible API on its
own, for your own tools (the openai SDK, an IDE agent) to talk to a trained researcher.

    arrl serve [--model SPEC] [--adapter DIR | RUN | RUN:VERSION] [--port 8000] [--runs-dir DIR]

The adapter is a PEFT folder, or a run's learner checkpoint: RUN (its newest) or RUN:VERSION
(`runs/<RUN>/learner/ckpt-<VERSION>/adapter`). Without --model the base is the one the adapter
records (arrl.policy.models.resolve_adapter_base); with both, the model must be that base (by the
weights' digest), else a one-line error. The base answers as model `base`, the adapter as
`adapter` (both names in /v1/models). It runs in the foreground on 127.0.0.1 until Ctrl-C or
SIGTERM, then stops the server and everything it started.
"""

from __future__ import annotations

import json
import re
import signal
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from arrl.policy import models

ADAPTER_NAME = "adapter"


class ServeError(Exception):
    """What to serve cannot be found or does not fit together; one line naming it."""


@dataclass
class Plan:
    model: str  # the model directory (or Hugging Face id) to serve
    adapter: Path | None  # the adapter folder, if any
    label: str  # what the adapter is, for the banner


def find_adapter(spec: str, runs_dir: Path) -> tuple[Path, str]:
    """An adapter folder from a path, RUN or RUN:VERSION (a run's learner checkpoints)."""
    p = Path(spec).expanduser()
    if p.is_dir():
        if not (p / "adapter_config.json").is_file():
            raise ServeError(f"{p}: not an adapter folder (no adapter_config.json)")
        return p, str(p)
    m = re.fullmatch(r"([^:/\\]+)(?::(\d+))?", spec)
    if m is None:
        raise ServeError(f"--adapter {spec}: no such folder, and not RUN or RUN:VERSION")
    run = runs_dir / m.group(1)
    if not (run / "ledger.sqlite").is_file():
        raise ServeError(f"--adapter {spec}: no such folder, and no run {m.group(1)!r} in {runs_dir}")
    ckpts = sorted(p for p in (run / "learner").glob("ckpt-*") if (p / "adapter" / "adapter_config.json").is_file())
    if not ckpts:
        raise ServeError(f"--adapter {spec}: run {m.group(1)!r} has no trained adapter (no learner checkpoint in "
                         f"{run / 'learner'})")
    if m.group(2) is None:
        chosen = ckpts[-1]
    else:
        chosen = run / "learner" / f"ckpt-{int(m.group(2)):06d}"
        if chosen not in ckpts:
            have = ", ".join(str(int(c.name.split("-")[1])) for c in ckpts)
            raise ServeError(f"--adapter {spec}: run {m.group(1)!r} has no adapter version {m.group(2)} "
                             f"(it keeps {have})")
    return chosen / "adapter", f"{m.group(1)} v{int(chosen.name.split('-')[1])}"


def plan(model: str | None, adapter: str | None, runs_dir: Path) -> Plan:
    """What to serve, checked before anything starts."""
    try:
        if adapter is None:
            return Plan(models.resolve(model or models.EMBEDDED), None, "")
        folder, label = find_adapter(adapter, runs_dir)
        if model is None:
            return Plan(models.resolve_adapter_base(folder, progress=True), folder, label)
        base = models.resolve(model)
        models.check_base(folder, base)
        return Plan(base, folder, label)
    except models.ModelError as e:
        raise ServeError(str(e)) from None


def serve(p: Plan, port: int, log_dir: Path | None = None, ready=None, stop: threading.Event | None = None,
          threads: int | None = None) -> None:
    """Start the server, print where it answers, block until SIGINT/SIGTERM (or `stop` is set), stop it."""
    from arrl.policy.vllm_server import ServerConfig, ServerError, VLLMServer

    from arrl.policy.vllm_server import port_free

    if not port_free(port):
        raise ServeError(f"port {port} is in use on 127.0.0.1; pass another with --port")
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="arrl-serve-"))
    extra = ("--lora-modules", f"{ADAPTER_NAME}={p.adapter}") if p.adapter else ()
    rank = max(16, int(json.loads((p.adapter / "adapter_config.json").read_text()).get("r", 16))) if p.adapter else 16
    server = VLLMServer(ServerConfig(model=p.model, served_name="base", max_lora_rank=rank if p.adapter else None,
                                     threads=threads, extra_args=extra), log_dir / "vllm.log", port=port)
    stop = stop or threading.Event()
    old: dict = {}
    try:
        try:  # Ctrl-C while it starts: KeyboardInterrupt, and the finally below stops what started
            server.start(progress=True)
        except ServerError as e:
            raise ServeError(str(e).splitlines()[0]) from None
        if threading.current_thread() is threading.main_thread():
            old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
        names = "base" + (f", {ADAPTER_NAME} ({p.label})" if p.adapter else "")
        print(f"serving {p.model} at {server.url}/v1 (OpenAI-compatible); models: {names}", flush=True)
        print(f"  e.g. OPENAI_BASE_URL={server.url}/v1 OPENAI_API_KEY=none; log {log_dir / 'vllm.log'}; "
              f"Ctrl-C stops it", flush=True)
        if ready is not None:
            ready(server.url)
        while not stop.wait(1.0):
            if not server.alive():
                raise ServeError(f"the server exited; log {log_dir / 'vllm.log'}")
    finally:
        server.stop()
        for s, h in old.items():
            signal.signal(s, h)
    print("stopped", flush=True)
