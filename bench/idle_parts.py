"""What the loop's own parts take from a run while they idle: the same run with them running and frozen, paired.

    .venv/bin/python bench/idle_parts.py [--pairs 6] [--budget 30] [--config FILE.toml] [--out FILE.json]

A child process brings up the parts of the README's default run exactly as `arrl launch` does
(a local Ray with its dashboard, the experiment worker actor, the policy server with vLLM and
SmolLM2, the SmolLM2 learner), then waits. Each pair trains the tiny target's unedited train.py
with one seed twice, in a random order:
- loop: through the worker actor, while the child polls `ray.wait` once a second as the driver
  does (early abort off, the worker's progress callback on, as in the default run);
- frozen: in this process's own sandbox with the same settings, while every process of the
  child's tree (Ray's daemons, the actors, vLLM) is stopped with SIGSTOP, so the loop's parts
  take nothing; this process runs at nice 15 like a Ray worker, so the watchdog is the same.
Both runs see the same machine minutes apart, so the VM's drift (steps of one script vary by
10-20% across an hour here) cancels in the pair. Reports each run's steps, tokens/s, CPU share
and foreign share, each pair's loss of tokens/s (loop against frozen) and the median, and for
each loop run the CPU seconds and wake-ups (voluntary context switches) of every other process
over the middle of the run, largest first: who took what.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


# ---- the child: the loop's parts, up and idle ----------------------------------------------------
def parts(config: str | None) -> None:
    import ray

    from arrl import actors, config as config_mod, launch as L, paths, target

    cfg = config_mod.load(config) if config else config_mod.Config()
    tgt = target.load(cfg.target, paths.targets_dir())
    place = L.plan_placement(cfg, None)
    workdir = Path(tempfile.mkdtemp(prefix="arrl-bench-idle-"))
    L._init_ray({"address": "local", "num_cpus": max(os.cpu_count() or 1, cfg.workers.count + 3)}, lambda m: None)
    settings = L.sandbox_settings(cfg, tgt, place, 0)
    worker = actors.experiment_worker("bench-idle", 0, tgt.profile, settings, "process", num_gpus=0,
                                      catalog=tgt.catalog)
    ray.get(worker.status.remote())
    policy, handle = L.make_policy(cfg, "bench-idle", workdir, tgt, place.policy_cores)
    learner = actors.learner("bench-idle", cfg.policy.model, cfg.learner.settings(0.0), str(workdir / "learner"),
                             cores=place.learner_cores) if cfg.learner.enabled and handle is not None else None
    print(json.dumps({"ready": True, "settings": settings, "placement": place.describe(),
                      "learner": learner is not None}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        seed = int(cmd[1])
        ref = worker.run.remote(seed, tgt.source(), seed)
        while True:  # the driver's wait: ray.wait on the running experiment, a second at a time
            ready, _ = ray.wait([ref], timeout=1.0)
            if ready:
                break
        print(json.dumps(ray.get(ref)["outcome"]), flush=True)
    ray.shutdown()


# ---- this process: pairs ---------------------------------------------------------------------------
def _tree(pid: int) -> list[int]:
    import psutil

    try:
        p = psutil.Process(pid)
        return [pid] + [c.pid for c in p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _matching(pids: list[int], regex: str) -> list[int]:
    import re

    out = []
    for p in pids:
        try:
            if re.search(regex, Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")):
                out.append(p)
        except OSError:
            pass
    return out


def _signal(pids: list[int], sig) -> None:
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def _snapshot() -> dict:
    """pid -> (name, CPU seconds, voluntary switches, involuntary switches), summed over the process's threads."""
    hz = os.sysconf("SC_CLK_TCK")
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            f = stat[stat.rindex(")") + 2:].split()
            cpu = (int(f[11]) + int(f[12])) / hz
            vol = inv = 0
            for t in (d / "task").iterdir():
                for ln in (t / "status").read_text().splitlines():
                    if ln.startswith("voluntary_ctxt_switches"):
                        vol += int(ln.split()[1])
                    elif ln.startswith("nonvoluntary_ctxt_switches"):
                        inv += int(ln.split()[1])
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:90]
            out[int(d.name)] = (name, cmd, cpu, vol, inv)
        except (OSError, ValueError, IndexError):
            continue
    return out


def _who(budget: float, result: dict) -> None:
    """Fills `result["who"]`: every process's CPU seconds and wake-ups between 5 s into the run and 5 s before
    its budget ends (the training tree's own included, marked)."""
    time.sleep(5.0)
    a, t0 = _snapshot(), time.monotonic()
    time.sleep(max(1.0, budget - 10.0))
    b, dt = _snapshot(), time.monotonic() - t0
    rows = []
    for pid, (name, cmd, cpu, vol, inv) in b.items():
        if pid not in a:
            continue
        d_cpu, d_vol, d_inv = cpu - a[pid][2], vol - a[pid][3], inv - a[pid][4]
        if d_cpu > 0 or d_vol > 0:
            rows.append({"pid": pid, "name": name, "cmd": cmd, "cpu_pct": round(100 * d_cpu / dt, 2),
                         "wakeups_per_s": round(d_vol / dt, 1), "preempted_per_s": round(d_inv / dt, 1)})
    rows.sort(key=lambda r: (-r["cpu_pct"], -r["wakeups_per_s"]))
    result["who"] = rows
    result["window_s"] = round(dt, 1)


def frozen_run(settings: dict, seed: int, pids: list[int]) -> dict:
    from arrl import paths, target
    from arrl.sandbox import ProcessSandbox, SandboxConfig

    tgt = target.load("tiny", paths.targets_dir())
    box = ProcessSandbox(paths.env_dir(), paths.data_dir("shakespeare"), SandboxConfig(**settings))
    _signal(pids, signal.SIGSTOP)
    try:
        o = box.run(tgt.source(), Path(tempfile.mkdtemp(prefix="arrl-bench-idle-")) / "run", seed=seed)
    finally:
        _signal(pids, signal.SIGCONT)
        box.close()
    return o.to_dict()


def _facts(o: dict) -> dict:
    t = (o.get("timings") or {}).get("train_s")
    return {k: o.get(k) for k in ("status", "steps", "tokens", "cpu_share", "foreign_share", "val_bpb")} | {
        "tokens_per_s": o["tokens"] / t if o.get("tokens") and t else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=700, help="the first pair's training seed (one per pair)")
    ap.add_argument("--config", default=None, help="a run config (default: the README's default run)")
    ap.add_argument("--freeze-in-loop", default="", metavar="REGEX",
                    help="also stop the child's processes whose command line matches REGEX during the loop runs "
                         "(what pausing that part while a run trains would give)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--parts", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.parts:
        return parts(a.config)
    os.nice(15 - os.nice(0))  # a Ray worker's priority: the frozen runs' watchdog is the loop's
    child = subprocess.Popen([sys.executable, __file__, "--parts"] + (["--config", a.config] if a.config else []),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        hello = json.loads(child.stdout.readline())
        settings = hello["settings"]
        print(f"parts up: {hello['placement']}; sandbox {settings}; learner {hello['learner']}", flush=True)
        time.sleep(10.0)  # start-up work settles
        rng = random.Random(a.seed)
        pairs = []
        for i in range(a.pairs):
            seed = a.seed + i
            order = ["loop", "frozen"] if rng.random() < 0.5 else ["frozen", "loop"]
            pair = {"seed": seed, "order": order}
            for cond in order:
                if cond == "loop":
                    who: dict = {}
                    th = threading.Thread(target=_who, args=(settings["budget_s"], who), daemon=True)
                    paused = _matching(_tree(child.pid), a.freeze_in_loop) if a.freeze_in_loop else []
                    child.stdin.write(f"run {seed}\n")
                    child.stdin.flush()
                    _signal(paused, signal.SIGSTOP)
                    th.start()
                    o = json.loads(child.stdout.readline())
                    _signal(paused, signal.SIGCONT)
                    th.join()
                    pair["loop"] = _facts(o) | {"who": who.get("who", [])[:25],
                                                                   "window_s": who.get("window_s")}
                else:
                    o = frozen_run(settings, seed, _tree(child.pid))
                    pair["frozen"] = _facts(o)
            pair["loss"] = 1 - pair["loop"]["tokens_per_s"] / pair["frozen"]["tokens_per_s"]
            pairs.append(pair)
            lp, fr = pair["loop"], pair["frozen"]
            print(f"pair {i} seed {seed} ({'/'.join(order)}): loop {lp['steps']} steps {lp['tokens_per_s']:.0f} tok/s "
                  f"foreign {lp['foreign_share']:.3f} | frozen {fr['steps']} steps {fr['tokens_per_s']:.0f} tok/s "
                  f"foreign {fr['foreign_share']:.3f} | loss {100 * pair['loss']:.1f}%", flush=True)
            top = [r for r in lp["who"] if r["cpu_pct"] < 150][:10]
            print("   others: " + "; ".join(f"{r['name']} {r['cpu_pct']:.1f}% {r['wakeups_per_s']:.0f}/s"
                                           for r in top), flush=True)
        losses = [p["loss"] for p in pairs]
        summary = {"freeze_in_loop": a.freeze_in_loop, "pairs": pairs, "median_loss": statistics.median(losses), "losses": losses}
        print(f"median loss of tokens/s, loop against frozen: {100 * summary['median_loss']:.1f}% "
              f"(pairs: {', '.join(f'{100 * x:.1f}%' for x in losses)})", flush=True)
        if a.out:
            Path(a.out).write_text(json.dumps(summary, indent=1) + "\n")
    finally:
        try:
            child.stdin.write("quit\n")
            child.stdin.flush()
            child.wait(120)
        except Exception:  # noqa: BLE001
            _signal(_tree(child.pid), signal.SIGCONT)
            child.kill()


if __name__ == "__main__":
    main()
