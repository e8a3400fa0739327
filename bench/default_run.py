"""The README's main command as a user sees it: what one default run measured, and whether it holds.

    # in a fresh clone with ../shared beside it:
    bash scripts/setup.sh && .venv/bin/arrl prepare && .venv/bin/arrl launch
    .venv/bin/python bench/default_run.py runs/<name> [--seeds 3] [--alone 5] [--alone-seed 100] [--out FILE.json]

For the run in RUN_DIR it reports the baselines' steps and val_bpb, σ with its degrees of
freedom and warning (and σ from the baselines alone), the candidates and how many were
answered from the ledger, each accepted edit, the contended re-runs and the wall time; then it
re-runs every accepted edit's train.py on its own (`arrl run tiny --source ... --seed S`,
`--seeds` seeds, pinned to the worker's cores as in the run) and the unedited train.py
`--alone` times (seeds `--alone-seed` on; pick fresh ones to pool alone runs across
invocations: a seed moves val_bpb by about twice what timing does, bench/noise_replay.py
--by-seed), and says whether each accepted edit reproduces: the median of its separate
runs beats the median of the separate runs of the incumbent it replaced (the unedited script,
or the accepted edit before it) by more than 2 pooled standard deviations of those runs. `--alone 0 --seeds 0` only reads the ledger.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from arrl.driver import noise as acceptance


def ledger(run_dir: Path) -> dict:
    db = sqlite3.connect(f"file:{run_dir / 'ledger.sqlite'}?mode=ro", uri=True)
    meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
    base = [dict(zip(("exp", "status", "val_bpb", "steps", "foreign_share", "attempts"), r)) for r in db.execute(
        "SELECT id, status, val_bpb, steps, foreign_share, attempts FROM experiments WHERE kind='baseline' ORDER BY id")]
    acc = [dict(zip(("exp", "val_bpb", "prev_bpb", "summary"), r)) for r in db.execute(
        "SELECT a.exp_id, a.val_bpb, a.prev_bpb, e.summary FROM accepted a JOIN experiments e ON e.id = a.exp_id "
        "ORDER BY a.created")]
    contended = db.execute("SELECT COUNT(*) FROM events WHERE kind='contended'").fetchone()[0]
    # the learner: each update, and which adapter version made the proposals that became candidates
    updates = [{"version": v, "samples": i.get("samples_in"), "update_s": i.get("update_s"),
                "served": bool(i.get("loaded_at"))} for v, i in
               ((v, json.loads(i)) for v, i in db.execute("SELECT version, info FROM policy_versions ORDER BY version"))]
    by_version = {str(v): n for v, n in db.execute(
        "SELECT p.adapter_version, COUNT(*) FROM experiments e JOIN proposals p ON p.id = e.proposal_id "
        "WHERE e.kind='candidate' GROUP BY p.adapter_version ORDER BY p.adapter_version")}
    failed = dict(db.execute("SELECT substr(message, 1, instr(message, ':') - 1), COUNT(*) FROM experiments "
                             "WHERE status='edit_failed' GROUP BY 1"))
    steps = [r[0] for r in db.execute("SELECT steps FROM experiments WHERE steps IS NOT NULL")]
    cands, dups = db.execute("SELECT COUNT(*), COALESCE(SUM(reused_from IS NOT NULL), 0) FROM experiments "
                             "WHERE kind='candidate'").fetchone()
    # sigma from the baselines alone, by the loop's estimator (the run's own sigma pools confirmations too)
    base_ok = [b["val_bpb"] for b in base if b["status"] == "ok"]
    sigma_base = acceptance.estimate(base_ok, 0.0).raw if len(base_ok) > 1 else None
    return {"run": run_dir.name, "placement": meta.get("placement"), "noise": meta.get("noise"),
            "wall_s": meta.get("wall_s"), "stop_reason": meta.get("stop_reason"), "baselines": base,
            "accepted": acc, "contended_reruns": contended, "runs_with_steps": len(steps),
            "sigma_baselines": sigma_base, "candidates": cands, "duplicates": dups, "learner_updates": updates,
            "candidates_by_adapter_version": by_version, "edit_failed": failed}


def run_one(source: Path, seed: int, cores: str) -> dict:
    cmd = [sys.executable, "-m", "arrl", "run", "tiny", "--source", str(source), "--seed", str(seed), "--json"]
    if cores:
        cmd += ["--cores", cores]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    o = json.loads(r.stdout.strip().splitlines()[-1])
    return {"status": o["status"], "val_bpb": o["val_bpb"], "steps": o["steps"], "foreign_share": o["foreign_share"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--alone", type=int, default=5)
    ap.add_argument("--alone-seed", type=int, default=100, help="the first alone run's seed (default 100)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rep = ledger(args.run_dir)
    print(json.dumps(rep), flush=True)
    cores = ((rep["placement"] or {}).get("worker_cores") or [""])[0]
    alone = [run_one(ROOT / "targets" / "tiny" / "train.py", args.alone_seed + s, cores)
             for s in range(args.alone)]
    for a in alone:
        print(json.dumps({"alone": a}), flush=True)
    ok = [a["val_bpb"] for a in alone if a["status"] == "ok"]
    rep["alone"] = alone
    if len(ok) > 1:
        rep["alone_sd"] = statistics.stdev(ok)
        rep["sigma_over_alone_sd"] = (rep["noise"] or {}).get("sigma", float("nan")) / rep["alone_sd"]
        if rep["sigma_baselines"] is not None:
            rep["sigma_baselines_over_alone_sd"] = rep["sigma_baselines"] / rep["alone_sd"]
    before = ok  # each accepted edit against the incumbent it replaced: the unedited script, then the last edit
    for acc in rep["accepted"]:
        src = args.run_dir / "experiments" / f"{acc['exp']:06d}" / "train.py"
        runs = [run_one(src, 200 + s, cores) for s in range(args.seeds)]
        vals = [r["val_bpb"] for r in runs if r["status"] == "ok"]
        acc["separate_runs"] = runs
        groups = [g for g in (vals, before) if len(g) > 1]
        if vals and before and groups:
            pooled = (sum(sum((v - statistics.fmean(g)) ** 2 for v in g) for g in groups)
                      / sum(len(g) - 1 for g in groups)) ** 0.5
            acc["separate_gain"] = statistics.median(before) - statistics.median(vals)
            acc["reproduces"] = acc["separate_gain"] > 2 * pooled
        before = vals
        print(json.dumps({"accepted": acc}), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rep, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
