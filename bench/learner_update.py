"""Learner update cost on this machine: seconds per PPO update and per 1,000 response tokens.

    .venv/bin/python bench/learner_update.py [--models tiny-random smollm2] [--batch 16] [--group 4]
        [--history 12] [--prompt-code]
    .venv/bin/python bench/learner_update.py --replay runs/NAME/trajectories/update-000002.parquet [--models smollm2]

For each model: real prompts (the tiny target's catalog-edit prompt with `--history` past
experiments, rendered with the model's chat template and tokenizer, as the policy server
would send it; `--prompt-code`: with the whole train.py in it, as before issue 23) and catalog
answers tokenized the same way, `--batch` samples in groups of `--group` sharing a prompt;
one `Learner.update` = reference/value scoring + `--epochs` PPO passes + adapter export +
checkpoint. Reports the median of `--updates` updates after one warm-up and the process's peak
RSS (run one model per process for a clean peak). No server is needed: the cost depends on
the shapes, not on who sampled the tokens.

`--replay FILE`: one update on a batch a run recorded (its trajectories/update-*.parquet, the
exact batch its learner was sent), with the learner at the batch's adapter version; reports
its time and the process's peak RSS (run one replay per process: the peak is the process's).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa

from arrl import paths, target
from arrl.policy import models
from arrl.learner.learner import Learner
from arrl.policy.prompt import HistoryEntry, PolicyState, build
from arrl.learner.trajectory import SCHEMA


def make_batch(model_dir: str, n: int, group: int, version: int, seed: int, history: int = 0,
               prompt_code: bool = False) -> pa.RecordBatch:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    t = target.load("tiny", paths.targets_dir())
    rng = random.Random(seed)
    cols = {f.name: [] for f in SCHEMA}
    for i in range(n):
        if i % group == 0:
            past = []
            for _ in range(history):
                k = rng.choice(t.catalog)
                past.append(HistoryEntry(json.dumps({k.name: rng.choice(k.values)}), "ok", 3.5 + rng.random(),
                                         rng.gauss(0.0, 1.0)))
            st = PolicyState(target=t.name, program=t.program_md.read_text(), source=t.source(), fmt="catalog",
                             catalog=t.catalog, incumbent_bpb=3.5 + rng.random(), history=tuple(past),
                             prompt_code=prompt_code)
            p = build(st, 100_000, lambda s: len(tok.encode(s)), seed=rng.randrange(1 << 30))
            text = tok.apply_chat_template(p.messages, add_generation_prompt=True, tokenize=False)
            prompt = tok.encode(text, add_special_tokens=False)
        knob = rng.choice(t.catalog)
        answer = json.dumps({knob.name: rng.choice(knob.values)}, separators=(",", ":"))
        ids = tok.encode(answer, add_special_tokens=False)
        cols["exp_id"].append(i)
        cols["proposal_id"].append(f"b{seed}-{i}")
        cols["group"].append(f"g{i // group}")
        cols["adapter_version"].append(version)
        cols["reward"].append(rng.gauss(0.0, 1.0))
        cols["status"].append("ok")
        cols["prompt_ids"].append(list(prompt))
        cols["response_ids"].append(ids)
        cols["logprobs"].append([-1.0] * len(ids))
        cols["constraint"].append("")
    return pa.RecordBatch.from_pydict(cols, schema=SCHEMA)


def bench(model: str, args) -> dict:
    model_dir = models.resolve(model)
    t0 = time.perf_counter()
    lrn = Learner(model_dir, {"epochs": args.epochs, "threads": args.threads, "advantage": args.advantage},
                  tempfile.mkdtemp(prefix="arrl-bench-learner-"))
    build_s = time.perf_counter() - t0
    times, res = [], None
    for u in range(args.updates + 1):
        batch = make_batch(model_dir, args.batch, args.group, lrn.version, seed=u, history=args.history,
                           prompt_code=args.prompt_code)
        t = time.perf_counter()
        res = lrn.update(batch)
        if u:  # the first update is a warm-up
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    prompt_tokens = int(np.mean([len(p) for p in batch.column("prompt_ids").to_pylist()]))
    return {"model": model, "batch": args.batch, "group": args.group, "epochs": args.epochs,
            "advantage": args.advantage, "history": args.history, "prompt": "train.py" if args.prompt_code else "knobs",
            "prompt_tokens": prompt_tokens, "response_tokens": res.tokens,
            "update_s_median": round(med, 2), "update_s_all": [round(x, 2) for x in times],
            "s_per_1k_response_tokens": round(med / res.tokens * 1000, 2), "learner_build_s": round(build_s, 1),
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def replay(model: str, path: str, args) -> dict:
    import pyarrow.parquet as pq

    model_dir = models.resolve(model)
    batch = pq.read_table(path).combine_chunks().to_batches()[0]
    lrn = Learner(model_dir, {"epochs": args.epochs, "threads": args.threads, "advantage": args.advantage},
                  tempfile.mkdtemp(prefix="arrl-bench-learner-"))
    lrn.version = max(batch.column("adapter_version").to_pylist())
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    t = time.perf_counter()
    res = lrn.update(batch)
    prompts = [len(p) for p in batch.column("prompt_ids").to_pylist()]
    return {"model": model, "replay": path, "samples": batch.num_rows, "used": len(res.exp_ids),
            "groups": len(set(batch.column("group").to_pylist())), "prompt_tokens_max": max(prompts),
            "prompt_tokens_mean": int(np.mean(prompts)), "epochs": args.epochs, "update_s": round(time.perf_counter() - t, 1),
            "peak_rss_gib_before": round(rss0, 2),
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tiny-random", "smollm2"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--updates", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--advantage", default="group", choices=["group", "gae"])
    ap.add_argument("--history", type=int, default=12, help="past experiments in each prompt (default 12: the "
                    "default run's first update comes after 12 proposals)")
    ap.add_argument("--prompt-code", action="store_true", help="prompts carry the whole train.py (before issue 23)")
    ap.add_argument("--replay", metavar="FILE", help="one update on a recorded batch (trajectories/update-*.parquet)")
    args = ap.parse_args()
    if args.replay:
        for m in args.models if "--models" in sys.argv else ["smollm2"]:
            print(json.dumps(replay(m, args.replay, args)), flush=True)
        return 0
    for m in args.models:
        print(json.dumps(bench(m, args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
