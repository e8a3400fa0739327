"""Reading a run back: the status view (`arrl status`). The files for other tools are arrl.ledger.export."""

from __future__ import annotations

import json
import time
from pathlib import Path

from arrl.driver import lineage
from arrl.ledger.reader import open_read_only
from arrl.report import tables as run_tables


def status_text(d: Path) -> tuple[str, bool]:
    """A readable summary of the run in `d`, and whether it has finished."""
    with open_read_only(d) as db:
        cfg = json.loads((d / "config.json").read_text())
        state = db.meta("status", "starting")
        counts = db.counts()
        inflight = db.running_count()
        pending = db.pending_count()
        acc = db.accepted_with_summaries()
        # what the experiment budget counts (Driver._counted): runs that trained, and duplicates answered from
        # the ledger only with `[oracle] count_duplicates` (a config.json from before the key counted them)
        ran, dups = db.runs_and_duplicates()
        count_dups = cfg["oracle"].get("count_duplicates", True)
        if not count_dups:
            ran -= dups
        busy = db.busy_seconds()
        version = db.newest_proposal_version()
        learned = db.last_policy_version()
        used = db.sample_usage()
        wall = db.meta("wall_s", 0.0) or 0.0
        noise = db.meta("noise")
        placement = db.meta("placement")
        pauses = db.meta("policy_pauses", 0)
        reason = db.meta("stop_reason")
        # the rows arrl.report.tables derives incumbents, throughput and the val/test gap from
        tables = db.status_tables(run_tables.THROUGHPUT)
        islands = archive_line(d, cfg, db, noise)
    workers = cfg["workers"]["count"]
    lines = [f"run {d.name}: {state}" + (f" ({reason})" if reason else ""),
             f"target {cfg['target']}, policy {cfg['policy']['kind']} ({cfg['policy']['fmt']}), {workers} worker(s)"]
    base = run_tables.baseline_values(tables)
    if base:
        start = run_tables.baseline_value(tables)
        best = acc[-1]["val_bpb"] if acc else start
        lines.append(f"best val_bpb {best:.4f} (baseline {start:.4f}, the median of {len(base)} ok), "
                     f"{len(acc)} accepted")
    if isinstance(noise, dict) and run_tables.num(noise.get("sigma")) is not None:
        lines.append(noise_line(noise))
        if noise.get("warning"):
            lines.append("warning: " + " ".join(str(noise["warning"]).split()))
    if isinstance(placement, dict) and placement:
        lines.append(placement_line(placement) + (f"; the idle policy server was stopped during {pauses} training "
                                                  "stretch(es)" if pauses else ""))
    cap = cfg["oracle"]["max_experiments"]
    dup_note = (f" ({dups} more answered from the ledger)" if not count_dups else
                f" ({dups} of them answered from the ledger)") if dups else ""
    lines.append(f"experiments run {ran}" + (f" / {cap}" if cap else "") + dup_note + f", in flight {inflight}, "
                 f"pending {pending}; proposals from policy version {version or 0}")
    trained_on = _meta_file(d, "trained_on")
    if trained_on:
        lines.append("learner trained offline on " + ", ".join(f"{t['run']} ({t['samples']} samples)"
                                                              for t in trained_on))
    links = lineage.chain(d)
    if links:
        lines.append("lineage: " + lineage.describe(links) + f" (adapter sha256 {links[0]['adapter_sha256'][:12]})")
    info = json.loads(learned[1]) if learned else {}
    if "warm_start" in info:
        lines.append(f"learner: adapter v1 ({'served' if info.get('loaded_at') else 'not yet served'}) from the warm "
                     f"start; no update yet")
    elif learned:
        m = info.get("metrics") or {}
        lines.append(f"learner: adapter v{learned[0]} ({'served' if info.get('loaded_at') else 'not yet served'}), "
                     f"{used[0]} samples trained, {used[1]} dropped; last update: reward {info.get('reward_mean', 0):+.2f}"
                     f", kl {m.get('kl', float('nan')):.4f}, clip {m.get('clip_fraction', float('nan')):.2f}, "
                     f"{info.get('update_s', 0):.1f} s")
    if islands:
        lines.append(islands)
    if wall:
        lines.append(f"wall {wall:.0f} s, worker busy fraction {busy / (workers * wall):.0%}")
        if cap and 0 < ran < cap:
            lines.append(f"ETA to the experiment budget: {(cap - ran) * wall / ran:.0f} s")
    thr = run_tables.throughput_rows(tables)
    reruns = run_tables.contended_reruns(tables)
    if thr or reruns or counts.get("contended"):
        lines.append(f"contended: {len(reruns)} re-run(s) of an attempt that got too little compute, "
                     f"{counts.get('contended', 0)} run(s) ended contended")
    if thr:
        lines.append(throughput_line(tables, acc[-1]["exp_id"] if acc else None, thr))
    gap = gap_line(tables)
    if gap:
        lines.append(gap)
    lines.append("by status: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none yet"))
    for a in acc[-5:]:
        lines.append(f"  accepted exp {a['exp_id']}: {a['prev_bpb']:.4f} -> {a['val_bpb']:.4f}  {a['summary'] or ''}"
                     [:120])
    return "\n".join(lines), state == "finished"


LAST_RUNS = 10  # the status line's throughput of "the last runs"


def archive_line(d: Path, cfg: dict, db, noise) -> str | None:
    """Population search: `archive: island 0: 12 programs, 3 elites, best exp 40 at 1.0412 (2 runs); ...`."""
    if cfg.get("search", {}).get("strategy") != "population" or not isinstance(noise, dict):
        return None
    from arrl import config as config_mod
    from arrl import paths
    from arrl import target as target_mod
    from arrl.driver.archive import Archive

    try:
        c = config_mod.from_dict(cfg, str(d / "config.json"))
        tgt = target_mod.load(c.target, paths.targets_dir())
        a = Archive(db, c.search, tgt.catalog, 0.0, c.integrity.reproduce_z, log=lambda *_: None)
        return "archive: " + a.summary(float(noise["sigma"]))
    except (config_mod.ConfigError, target_mod.TargetError, KeyError, TypeError, ValueError) as e:
        return f"archive: not shown ({str(e).splitlines()[0][:200]})"


def noise_line(noise: dict) -> str:
    """`noise sigma 0.0123 (robust, 4 dof)`; an older ledger records no dof: `noise sigma 0.0123`."""
    dof = run_tables.as_int(noise.get("dof"))
    return f"noise sigma {run_tables.num(noise['sigma']):.4f}" + (f" (robust, {dof} dof)" if dof is not None else "")


def placement_line(p: dict) -> str:
    """The run's CPU placement in one line, e.g. `placement: reserved, cores 0-3; workers 0-1 | 2-3; policy 2;
    learner 3 (why)`."""
    def cores(x) -> str:
        return str(x) if x not in (None, "") else "unpinned"

    parts = [str(p.get("mode") or "?")]
    if "cores" in p:
        parts.append(f"cores {cores(p['cores'])}")
    out = "placement: " + ", ".join(parts)
    roles = []
    if isinstance(p.get("worker_cores"), list):
        roles.append("workers " + (" | ".join(cores(c) for c in p["worker_cores"]) or "none"))
    for role in ("policy", "learner"):
        if f"{role}_cores" in p:
            roles.append(f"{role} {cores(p[f'{role}_cores'])}")
    if roles:
        out += "; " + "; ".join(roles)
    if p.get("why"):
        out += " (" + " ".join(str(p["why"]).split()) + ")"
    return out


def _rate(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _thr(t: dict) -> str:
    steps = "-" if t["steps"] is None else f"{t['steps']:.0f}"
    share = "-" if t["cpu_share"] is None else f"{t['cpu_share']:.2f}"
    return f"{steps} steps, {_rate(t['tokens_per_s'])} tokens/s, cpu share {share}"


def throughput_line(tables: dict, inc_id: int | None, thr: list[dict]) -> str:
    """Median steps, tokens/s and CPU share of the incumbent's runs (its ok baselines for the start) and of
    the last LAST_RUNS finished runs that recorded throughput."""
    ids = {run_tables.as_int(r["id"]) for r in run_tables.incumbent_runs(tables, inc_id)}
    own = run_tables.throughput_summary([t for t in thr if t["id"] in ids])
    last = run_tables.throughput_summary(thr[-LAST_RUNS:])
    whose = f"{own['n']} baselines" if inc_id is None else f"exp {inc_id}, {own['n']} run{'s' * (own['n'] != 1)}"
    line = "throughput (median): "
    if own["n"]:
        line += f"incumbent ({whose}): {_thr(own)}; "
    return line + f"last {last['n']} runs: {_thr(last)}"


def gap_line(tables: dict) -> str | None:
    """`val/test gap: incumbent exp 14 test 1.2100 - val 1.2000 = +0.0100 (2 runs); start ...`, when the
    ledger has test scores."""
    if not tables.get("test_scores"):
        return None
    inc = run_tables.incumbents(tables)
    if not inc:
        return None

    def one(i: dict) -> str:
        name = "start" if i["start"] else f"exp {i['exp_id']}"
        if i["gap"] is None:
            return f"{name} not scored" + (f" ({i['n_failed']} failed)" if i["n_failed"] else " yet")
        return (f"{name} test {i['test']:.4f} - val {i['val']:.4f} = {i['gap']:+.4f} ({i['n_test']} run"
                f"{'s' if i['n_test'] != 1 else ''})")

    line = "val/test gap: incumbent " + one(inc[-1])
    if len(inc) > 1:
        line += "; " + one(inc[0])
    return line


def wait_finished(d: Path, timeout: float) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if _meta_file(d, "status") == "finished":
            return True
        time.sleep(0.5)
    return False


def _meta_file(d: Path, key: str):
    with open_read_only(d) as db:
        return db.meta(key)
