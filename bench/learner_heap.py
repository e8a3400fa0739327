"""Host memory of the learner's scoring pass: one process, `--groups` prompts of `--prompt` tokens.

    .venv/bin/python bench/learner_heap.py [--prompt 3000] [--groups 3] [--mmap-mb 4]
    MALLOC_TRIM_THRESHOLD_=0 .venv/bin/python bench/learner_heap.py --mmap-mb 0   # other allocator settings
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 .venv/bin/python bench/learner_heap.py --mmap-mb 0

SmolLM2 with a fresh LoRA (arrl.learner.rl_module, as the learner builds it): each group's forward
with gradients (4 responses of 20 tokens), then one backward over all groups, as a PPO pass
does. Reports the process's RSS after each group's forward, its peak (sampled every 20 ms)
and the time, so allocator settings can be compared: `--mmap-mb` is what `[learner]
mmap_mb` sets (arrl.learner.ppo.bound_heap; 0 leaves glibc's default), environment
variables set anything else.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import types

import psutil
import torch

from arrl.policy import models
from arrl.learner import rl_module
from arrl.learner.ppo import bound_heap


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt", type=int, default=3000)
    ap.add_argument("--groups", type=int, default=3)
    ap.add_argument("--mmap-mb", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    bound = bound_heap(args.mmap_mb)
    torch.set_num_threads(args.threads)
    model = rl_module.build_peft_model(models.resolve("smollm2", progress=False), 16, 32,
                                       rl_module.DEFAULT_TARGETS, 0)
    module = types.SimpleNamespace(model=model, value_head=None)
    module._responses = types.MethodType(rl_module.LoraPolicyModule._responses, module)
    proc, peak = psutil.Process(), [0]

    def watch():
        while True:
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()
    gib = 2 ** 30
    g = torch.Generator().manual_seed(0)
    n, t = 4, 20
    outs, after = [], []
    t0 = time.perf_counter()
    for _ in range(args.groups):
        prompt = torch.randint(0, 40000, (1, args.prompt), generator=g)
        resp = torch.randint(0, 40000, (n, t), generator=g)
        masks = torch.full((n, t, (model.config.vocab_size + 7) // 8), 255, dtype=torch.uint8)
        outs.append(rl_module.LoraPolicyModule._group(module, prompt, resp, torch.ones(n, t, dtype=torch.bool),
                                                      masks, False))
        after.append(round(proc.memory_info().rss / gib, 2))
    sum(o[0].sum() for o in outs).backward()
    time.sleep(0.1)
    print(json.dumps({"prompt_tokens": args.prompt, "groups": args.groups, "mmap_mb": args.mmap_mb,
                      "mmap_set": bound, "rss_after_each_forward_gib": after,
                      "peak_rss_gib": round(peak[0] / gib, 2), "s": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
