"""vLLM on CPU with and without a worker process of its own: start, generation and idle CPU.

    .venv/bin/python bench/vllm_cpu_modes.py [--model smollm2] [--trials 2] [--out FILE.json]

For each trial, in alternating order, one server per mode is started the way arrl starts the
policy server (arrl.policy.vllm_server, 2 OMP threads, LoRA on):
- `worker`: vLLM's CPU default, the model in a worker process of its own (VLLM_ENABLE_V1_MULTIPROCESSING=1);
- `engine`: the model in the engine process (VLLM_ENABLE_V1_MULTIPROCESSING=0), what arrl sets on CPU.
It reports seconds until /health answers, seconds per request of 4 samples x 128 tokens (a
policy group; 3 requests, ignore_eos), the server's CPU share of one core in the 5 s after the
last request and again after 20 s idle, and its process count. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from arrl.policy import models
from arrl.policy.vllm_server import ServerConfig, VLLMServer

PROMPT = "Write a short poem about the sea. " * 40


def _cpu(procs: list) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _share(procs: list, seconds: float) -> float:
    c0 = _cpu(procs)
    time.sleep(seconds)
    return (_cpu(procs) - c0) / seconds


def one(model: str, mode: str, workdir: Path) -> dict:
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "1" if mode == "worker" else "0"}
    cfg = ServerConfig(model=model, max_model_len=4096, threads=2, env=env)
    server = VLLMServer(cfg, workdir / f"vllm-{mode}.log")
    t0 = time.perf_counter()
    server.start()
    ready = time.perf_counter() - t0
    try:
        groups = []
        for i in range(3):
            t = time.perf_counter()
            r = httpx.post(server.url + "/v1/completions", timeout=600, json={
                "model": "base", "prompt": PROMPT, "max_tokens": 128, "n": 4, "temperature": 1.0, "seed": i,
                "ignore_eos": True})
            r.raise_for_status()
            groups.append(time.perf_counter() - t)
        procs = [server.guard] + server.guard.children(recursive=True)
        after = _share(procs, 5.0)
        time.sleep(15.0)
        idle = _share(procs, 10.0)
        return {"mode": mode, "ready_s": round(ready, 1), "group_s": [round(g, 2) for g in groups],
                "cpu_after_requests": round(after, 3), "cpu_idle": round(idle, 3), "processes": len(procs)}
    finally:
        server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--trials", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    model = models.resolve(args.model)
    rows = []
    with tempfile.TemporaryDirectory(prefix="arrl-vllm-modes-") as tmp:
        for trial in range(args.trials):
            for mode in (("worker", "engine") if trial % 2 == 0 else ("engine", "worker")):
                row = {"trial": trial, **one(model, mode, Path(tmp))}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\n| mode | trials | ready (s) | group of 4 x 128 tokens (s, median) | CPU after requests | CPU idle | processes |")
    print("|---|---|---|---|---|---|---|")
    for mode in ("worker", "engine"):
        rs = [r for r in rows if r["mode"] == mode]
        print(f"| {mode} | {len(rs)} | {', '.join(str(r['ready_s']) for r in rs)} | "
              f"{statistics.median(g for r in rs for g in r['group_s']):.2f} | "
              f"{', '.join(format(r['cpu_after_requests'], '.1%') for r in rs)} | "
              f"{', '.join(format(r['cpu_idle'], '.1%') for r in rs)} | {rs[0]['processes']} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
