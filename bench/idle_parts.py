"""What the loop's own parts take from a run while they idle: the same run with them running and frozen, paired.

    .venv/bin/python bench/idle_parts.py [--pairs 6] [--arms loop,loop-vllm-paused,frozen] [--nice N]
                                         [--config FILE.toml] [--out FILE.json]

A child process brings up the parts of the README's default run as `arrl launch` does (a local
Ray with its dashboard, the experiment worker actor, the policy server with vLLM and SmolLM2,
the SmolLM2 learner), then waits. For each seed (`--pairs` of them) the tiny target's unedited
train.py trains once in every arm, in a random order:
- loop: through the worker actor, while the child polls `ray.wait` once a second as the driver
  does (early abort off, the worker's progress callback on, as in the default run);
- loop-vllm-paused: the same, with the vLLM server's processes stopped (SIGSTOP) while the run
  trains, as the driver's between_runs placement now does;
- frozen: in this process's own sandbox with the same settings, while every process of the
  child's tree and of vLLM (Ray's daemons, the actors, the server) is stopped, so the loop's
  parts take nothing; this process runs at nice 15 like a Ray worker, so the watchdog is the same.
The arms of one seed run minutes apart, so the VM's drift (steps of one script vary by 10-20%
across an hour here) mostly cancels. Reports each run's steps, tokens/s and foreign share, each
loop arm's loss of tokens/s against frozen by seed and its median, and for each loop run the CPU
share and wake-ups (voluntary context switches) of every other process over the middle of the
run, largest first: who took what. `--nice` sets the runs' priority in every arm; `--no-dashboard`
starts Ray without its dashboard.
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
def parts(config: str | None, nice: int | None, dashboard: bool = True) -> None:
    import ray

    from arrl import actors, config as config_mod, launch as L, paths, target

    cfg = config_mod.load(config) if config else config_mod.Config()
    tgt = target.load(cfg.target, paths.targets_dir())
    place = L.plan_placement(cfg, None)
    workdir = Path(tempfile.mkdtemp(prefix="arrl-bench-idle-"))
    L._init_ray({"address": "local", "num_cpus": max(os.cpu_count() or 1, cfg.workers.count + 3),
                 **({} if dashboard else {"include_dashboard": False})}, lambda m: None)
    settings = L.sandbox_settings(cfg, tgt, place, 0)
    if nice is not None:
        settings["nice"] = nice
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
        print(json.dumps(ray.get(ref).to_dict()), flush=True)
    ray.shutdown()


# ---- this process: pairs ---------------------------------------------------------------------------
def _tree(pid: int) -> list[int]:
    import psutil

    try:
        p = psutil.Process(pid)
        return [pid] + [c.pid for c in p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


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
    from arrl.worker.sandbox.process import ProcessSandbox
    from arrl.worker.sandbox.config import SandboxConfig

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


def _vllm(pids_of_guards: list[int]) -> list[int]:
    """The vLLM server's processes: the descendants of its guard (arrl.policy.vllm_server), which the guard
    detached from the policy actor, so they are not in the child's tree."""
    out = []
    for g in pids_of_guards:
        out += _tree(g)[1:]
    return out


def _guards() -> list[int]:
    import psutil

    return [p.pid for p in psutil.process_iter(["cmdline"])
            if "arrl.policy.vllm_server" in " ".join(p.info["cmdline"] or []) and "--guard" in (p.info["cmdline"] or [])]


ARMS = ("loop", "loop-vllm-paused", "frozen")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=6, help="seeds: each trains once in every arm, in a random order")
    ap.add_argument("--seed", type=int, default=700, help="the first seed")
    ap.add_argument("--arms", default="loop,frozen",
                    help=f"comma-separated, of {', '.join(ARMS)} (loop-vllm-paused: the vLLM server's processes "
                         "stopped while the loop's run trains)")
    ap.add_argument("--config", default=None, help="a run config (default: the README's default run)")
    ap.add_argument("--nice", type=int, default=None, help="the runs' scheduling priority (SandboxConfig.nice; "
                    "below 0 needs root), in every arm")
    ap.add_argument("--no-dashboard", action="store_true", help="Ray without its dashboard (what that would give)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--parts", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.parts:
        return parts(a.config, a.nice, not a.no_dashboard)
    arms = a.arms.split(",")
    if "frozen" not in arms or any(x not in ARMS for x in arms):
        sys.exit(f"--arms: a comma-separated list of {', '.join(ARMS)} that includes frozen, got {a.arms!r}")
    os.nice(15 - os.nice(0))  # a Ray worker's priority: the frozen runs' watchdog is the loop's
    child = subprocess.Popen([sys.executable, __file__, "--parts"] + (["--config", a.config] if a.config else [])
                             + (["--nice", str(a.nice)] if a.nice is not None else [])
                             + (["--no-dashboard"] if a.no_dashboard else []),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        hello = json.loads(child.stdout.readline())
        settings = hello["settings"]
        guards = _guards()
        print(f"parts up: {hello['placement']}; sandbox {settings}; learner {hello['learner']}; vLLM guards {guards}",
              flush=True)
        time.sleep(10.0)  # start-up work settles
        rng = random.Random(a.seed)
        rows = []
        for i in range(a.pairs):
            seed = a.seed + i
            order = list(arms)
            rng.shuffle(order)
            row = {"seed": seed, "order": order}
            for arm in order:
                if arm == "frozen":
                    row[arm] = _facts(frozen_run(settings, seed, _tree(child.pid) + [p for g in guards
                                                                                     for p in _tree(g)]))
                    continue
                who: dict = {}
                th = threading.Thread(target=_who, args=(settings["budget_s"], who), daemon=True)
                paused = _vllm(guards) if arm == "loop-vllm-paused" else []
                _signal(paused, signal.SIGSTOP)
                child.stdin.write(f"run {seed}\n")
                child.stdin.flush()
                th.start()
                o = json.loads(child.stdout.readline())
                _signal(paused, signal.SIGCONT)
                th.join()
                row[arm] = _facts(o) | {"who": who.get("who", [])[:25], "window_s": who.get("window_s")}
            for arm in arms:
                if arm != "frozen":
                    row[arm]["loss"] = 1 - row[arm]["tokens_per_s"] / row["frozen"]["tokens_per_s"]
            rows.append(row)
            print(f"seed {seed} ({'/'.join(order)}): " + " | ".join(
                f"{arm} {row[arm]['steps']} steps {row[arm]['tokens_per_s']:.0f} tok/s foreign "
                f"{row[arm]['foreign_share']:.3f}" + (f" loss {100 * row[arm]['loss']:.1f}%" if arm != "frozen" else "")
                for arm in arms), flush=True)
            for arm in arms:
                if arm != "frozen":
                    top = [r for r in row[arm]["who"] if r["cpu_pct"] < 150][:10]
                    print(f"   {arm}, others: " + "; ".join(
                        f"{r['name']} {r['cpu_pct']:.1f}% {r['wakeups_per_s']:.0f}/s" for r in top), flush=True)
        summary = {"arms": arms, "rows": rows, "median_loss": {}}
        for arm in arms:
            if arm != "frozen":
                losses = [r[arm]["loss"] for r in rows]
                summary["median_loss"][arm] = statistics.median(losses)
                print(f"{arm}: median loss of tokens/s against frozen {100 * statistics.median(losses):.1f}% "
                      f"(by seed: {', '.join(f'{100 * x:.1f}%' for x in losses)})", flush=True)
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
