"""Policy server throughput and adapter hot-swap latency on this machine.

    .venv/bin/python bench/policy_throughput.py [--models tiny-random smollm2] [--proposals 32]

For each model: a PolicyServer (vLLM, runtime LoRA on) serving catalog-edit proposals for
the tiny target (the embedded CPU default's format), proposals per second with 1 and with
8 concurrent requests (one proposal per request). Then, for each model, the hot-swap
latency of a rank-16 LoRA adapter: adapter bytes in hand -> load_adapter -> the first
proposal made by the new version has returned (median of --swaps).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

from arrl import paths, target
from arrl.policy import models
from arrl.policy.server import PolicyConfig, PolicyServer
from arrl.policy.client import Sampling
from arrl.policy.adapters import adapter_files
from arrl.policy.prompt import PolicyState


def throughput(ps: PolicyServer, st: PolicyState, concurrency: int, n: int) -> dict:
    ps.propose(st, 1)  # warm: prefix cache, grammar compilation
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        props = [p for batch in pool.map(lambda _: ps.propose(st, 1), range(n)) for p in batch]
    wall = time.perf_counter() - t0
    tokens = sum(len(p.token_ids) for p in props)
    valid = sum(p.finish_reason == "stop" for p in props)
    return {"concurrency": concurrency, "proposals": n, "wall_s": round(wall, 2),
            "proposals_per_s": round(n / wall, 3), "completion_tokens_per_s": round(tokens / wall, 1),
            "mean_completion_tokens": round(tokens / n, 1), "finished": valid,
            "prompt_tokens": len(props[0].prompt_token_ids)}


def swaps(ps: PolicyServer, st: PolicyState, model_dir: str, k: int, tmp: Path) -> dict:
    files = [adapter_files(models.lora_adapter(model_dir, tmp / f"a{i}", 16, std=0.01, seed=i)) for i in range(k)]
    load, total = [], []
    for i, f in enumerate(files):
        t0 = time.perf_counter()
        load.append(ps.load_adapter(ps.version + 1, f))
        p = ps.propose(st, 1, sampling=Sampling(max_tokens=32))[0]
        assert p.adapter_version == ps.version
        total.append(time.perf_counter() - t0)
    size = sum(len(b) for b in files[0].values())
    return {"rank": 16, "adapter_bytes": size, "swaps": k, "load_median_s": round(statistics.median(load), 3),
            "to_first_proposal_median_s": round(statistics.median(total), 3),
            "to_first_proposal_max_s": round(max(total), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=[models.TINY, models.EMBEDDED])
    ap.add_argument("--proposals", type=int, default=32)
    ap.add_argument("--swaps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for the vLLM engine")
    a = ap.parse_args()
    t = target.load("tiny", paths.targets_dir())
    st = PolicyState(target=t.name, program=t.program_md.read_text(), source=t.source(), fmt="catalog",
                     catalog=t.catalog)
    results = []
    for spec in a.models:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = PolicyConfig(model=spec, sampling=Sampling(temperature=1.0, max_tokens=128),
                               server={"threads": a.threads})
            ps = PolicyServer(cfg, workdir=tmp, progress=True)
            ps.start()
            try:
                row = {"model": spec, "startup_s": round(ps.server.ready_s, 1)}
                row["c1"] = throughput(ps, st, 1, max(4, a.proposals // 4))
                row["c8"] = throughput(ps, st, 8, a.proposals)
                row["hot_swap"] = swaps(ps, st, ps.model_dir, a.swaps, Path(tmp))
            finally:
                ps.stop()
        results.append(row)
        print(json.dumps(row), flush=True)
    print(f"# {time.strftime('%Y-%m-%d')} {os.cpu_count()} cores, python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
