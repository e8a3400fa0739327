"""How diverse a learning policy's proposals stay: the repeat collapse, read from run ledgers.

    .venv/bin/python bench/proposal_diversity.py RUN_DIR [RUN_DIR ...] [--markdown]

For each run folder (one with a ledger.sqlite, e.g. `<out>/runs/*-population-rl-s*` of `arrl bench
research`) it prints:

  proposals      edits the policy proposed (every proposal of every request)
  distinct       different edit texts among them
  top share      the share of all proposals taken by the most frequent edit text
  same groups    requests whose proposals were all the same text (group advantages are then zero)
  from ledger    candidates answered from the ledger without training (an exact repeat of a program)
  updates        adapter versions the learner trained
  zero loss      updates whose policy loss was 0: every group in the batch had equal rewards, so
                 nothing moved the policy but the KL and entropy terms
  entropy        the mean decision-token entropy the learner logged, over the first and the last
                 quarter of its updates

Nothing is run: it reads the ledgers only (read-only connections).
"""

from __future__ import annotations

import argparse
import collections
import json
import sqlite3
import statistics
import sys
from pathlib import Path

COLUMNS = ("run", "proposals", "distinct", "top share", "same groups", "from ledger", "updates", "zero loss",
           "entropy first / last quarter")


def diversity(run_dir: Path) -> dict:
    db = run_dir / "ledger.sqlite"
    if not db.is_file():
        raise SystemExit(f"{run_dir}: no ledger.sqlite there")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        groups = collections.defaultdict(list)
        for key, text in con.execute("SELECT state_key, text FROM proposals ORDER BY id"):
            groups[key].append(text)
        texts = collections.Counter(t for g in groups.values() for t in g)
        reused = con.execute("SELECT COUNT(*) FROM experiments WHERE reused_from IS NOT NULL").fetchone()[0]
        metrics = []
        for (info,) in con.execute("SELECT info FROM policy_versions ORDER BY version"):
            m = json.loads(info or "{}").get("metrics") or {}
            if "entropy" in m:
                metrics.append(m)
    finally:
        con.close()
    n = sum(texts.values())
    quarter = max(len(metrics) // 4, 1)
    ent = [m["entropy"] for m in metrics]
    return {"run": run_dir.name, "proposals": n, "distinct": len(texts),
            "top share": texts.most_common(1)[0][1] / n if n else 0.0,
            "same groups": sum(1 for g in groups.values() if len(g) > 1 and len(set(g)) == 1),
            "groups": len(groups), "from ledger": reused, "updates": len(metrics),
            "zero loss": sum(1 for m in metrics if abs(m.get("policy_loss", 1.0)) < 1e-9),
            "entropy first": statistics.fmean(ent[:quarter]) if ent else None,
            "entropy last": statistics.fmean(ent[-quarter:]) if ent else None}


def _cells(r: dict) -> list[str]:
    ent = ("—" if r["entropy first"] is None else f"{r['entropy first']:.3f} / {r['entropy last']:.3f}")
    return [r["run"], str(r["proposals"]), str(r["distinct"]), f"{r['top share']:.2f}",
            f"{r['same groups']} of {r['groups']}", str(r["from ledger"]), str(r["updates"]), str(r["zero loss"]), ent]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (each with a ledger.sqlite)")
    ap.add_argument("--markdown", action="store_true", help="a Markdown table")
    args = ap.parse_args(argv)
    rows = [diversity(p) for p in args.runs]
    if args.markdown:
        print("| " + " | ".join(COLUMNS) + " |")
        print("|" + "---|" * len(COLUMNS))
        for r in rows:
            print("| " + " | ".join(_cells(r)) + " |")
    else:
        cells = [list(COLUMNS)] + [_cells(r) for r in rows]
        widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
        for c in cells:
            print("  ".join(x.ljust(w) for x, w in zip(c, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
