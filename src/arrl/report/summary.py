"""`arrl report`: a run's figures and a self-contained HTML summary.

    runs/<name>/report/          (or --out DIR)
      progress.png               val_bpb of every experiment, the incumbent as a step line
      learning.png               rewards by adapter version; the learner's reward, KL, clip fraction
      gap.png                    each incumbent's val_bpb and sealed test_bpb and their gap (only when
                                 the run has test scores)
      summary.html               one file, no external requests: the figures (base64 data URIs),
                                 the best diff, accepted edits, incumbents' val/test, statuses,
                                 timings and throughput, the run's config

The report first refreshes the run's Parquet export (arrl.ledger.export.export, which also writes
results.tsv) and draws from those tables with arrl.report.figures, the functions the notebook uses.
It only reads the run, so it works on a run in progress (the figures show finished
experiments; the title counts the others) and on an empty one (the figures say "no
experiments yet"). A ledger or config that cannot be read, or an output folder that cannot
be written, is a ReportError with one line naming the file.
"""

from __future__ import annotations

import base64
import difflib
import html
import json
import statistics
import time
from pathlib import Path

from arrl.driver import lineage
from arrl.ledger import reader as ledger_reader
from arrl.ledger.reader import open_read_only
from arrl.report import figures
from arrl.report import tables as run_tables

FILES = ("progress.png", "learning.png", "summary.html")  # always written
GAP_FILE = "gap.png"  # written (before summary.html) when the run has test scores


class ReportError(Exception):
    """The run cannot be reported; the message is one line naming the file or folder."""


# -- reading the run --------------------------------------------------------------------------
def load(run_dir: Path) -> dict:
    """Refresh the export and read it: {"tables", "config", "meta", "run_dir"}."""
    from arrl.ledger import export

    d = Path(run_dir)
    db_path = d / "ledger.sqlite"
    if not db_path.is_file():
        raise ReportError(f"{db_path}: no ledger (not a run directory)")
    try:
        config = json.loads((d / "config.json").read_text())
        if not isinstance(config, dict):
            raise TypeError("not a JSON object")
    except FileNotFoundError:
        raise ReportError(f"{d / 'config.json'}: missing (the run's config is written at launch)") from None
    except (OSError, ValueError, TypeError) as e:
        raise ReportError(f"{d / 'config.json'}: unreadable ({_line(e)})") from None
    try:
        export.export(d)
        meta = _meta(db_path)
    except ledger_reader.Error as e:
        raise ReportError(f"{db_path}: the ledger is unreadable ({_line(e)})") from None
    except OSError as e:
        raise ReportError(f"{d / 'exports'}: cannot write the export ({e.strerror or _line(e)})") from None
    import pyarrow as pa

    try:
        tables = run_tables.read_tables(d / "exports")
    except (OSError, ValueError, pa.ArrowException) as e:
        raise ReportError(f"{d / 'exports'}: the Parquet export is unreadable ({_line(e)})") from None
    return {"tables": tables, "config": config, "meta": meta, "run_dir": d}


def _meta(db_path: Path) -> dict:
    with open_read_only(db_path.parent) as db:  # read-only, like `arrl status`
        return db.all_meta()


def _line(e: Exception) -> str:
    return " ".join(str(e).split())[:200] or type(e).__name__


# -- writing ----------------------------------------------------------------------------------
def write_report(run_dir: Path, out: Path | None = None) -> list[Path]:
    """Write progress.png, learning.png, gap.png (when the run has test scores) and summary.html for the run
    in `run_dir`; returns their paths."""
    run = load(run_dir)
    out = Path(out) if out is not None else Path(run_dir) / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"{out}: cannot create the report folder ({e.strerror or _line(e)})") from None
    name, target = run["config"].get("name") or Path(run_dir).name, run["config"].get("target", "")
    t = run["tables"]
    pngs = {
        "progress.png": figures.png_bytes(figures.progress_figure(t, name, target), run_tables.progress_data(t)["counts"]),
        "learning.png": figures.png_bytes(figures.learning_figure(t, name, target), run_tables.learning_data(t)["counts"]),
    }
    if t.get("test_scores"):
        pngs[GAP_FILE] = figures.png_bytes(figures.gap_figure(t, name, target), run_tables.gap_data(t)["counts"])
    page = summary_html(run, pngs)
    paths = []
    try:
        for fname, data in pngs.items():
            (out / fname).write_bytes(data)
            paths.append(out / fname)
        (out / "summary.html").write_text(page, encoding="utf-8")
        paths.append(out / "summary.html")
    except OSError as e:
        raise ReportError(f"{out}: cannot write the report ({e.strerror or _line(e)})") from None
    return paths


# -- HTML -------------------------------------------------------------------------------------
CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1150px;
       color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f7f7f7; border: 1px solid #e3e3e3; padding: 0.7em; overflow-x: auto; font-size: 12px; }
img { max-width: 100%; border: 1px solid #eee; }
.kv td:first-child { color: #555; } .empty { color: #777; font-style: italic; }
"""


def _e(x) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _f(x, fmt: str = ".4f", empty: str = "–") -> str:
    return empty if x is None else format(x, fmt)


def html_table(header: list[str] | None, rows: list[list], numeric: set[int] = frozenset(), cls: str = "") -> str:
    """A small HTML table (no header row when header is None); cells are escaped, columns in `numeric`
    right-aligned."""
    head = "<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr></thead>" if header else ""
    body = "".join("<tr>" + "".join(f'<td class="num">{_e(c)}</td>' if i in numeric else f"<td>{_e(c)}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<table{f" class={cls!r}" if cls else ""}>{head}<tbody>{body}</tbody></table>'


def accepted_table(tables: dict, sigma: float | None = None) -> tuple[list[str], list[list]]:
    """(header, rows) of the accepted edits, in order of acceptance."""
    header = ["exp", "prev val_bpb", "new val_bpb", "improvement", "summary", "commit"]
    if sigma:
        header.insert(4, "in noise σ")
    rows = []
    for a in run_tables.accepted_edits(tables):
        row = [a["exp_id"], _f(a["prev_bpb"]), _f(a["val_bpb"]), _f(a["improvement"], "+.4f")]
        if sigma:
            row.append(_f(a["improvement"] / sigma if a["improvement"] is not None else None, "+.1f"))
        rows.append(row + [run_tables.shorten(a["summary"], 120), (a["commit_sha"] or "")[:10]])
    return header, rows


def incumbents_table(tables: dict) -> tuple[list[str], list[list]]:
    """(header, rows) of the incumbents (the start, then each accepted edit) with their val, test and gap."""
    header = ["incumbent", "from exp", "summary", "val_bpb", "test_bpb", "test runs", "gap (test − val)"]
    rows = []
    for i in run_tables.incumbents(tables):
        runs = str(i["n_test"]) + (f" (+{i['n_failed']} failed)" if i["n_failed"] else "")
        what = "start: " + i["summary"] if i["start"] else run_tables.shorten(i["summary"], 80)
        rows.append([i["exp_id"], i["at"], what, _f(i["val"]), _f(i["test"]), runs, _f(i["gap"], "+.4f")])
    return header, rows


THROUGHPUT_ROWS = 200  # the throughput table's most recent runs


def throughput_table(tables: dict) -> tuple[list[str], list[list]]:
    """(header, rows) of the finished runs that recorded throughput (the most recent THROUGHPUT_ROWS)."""
    header = ["exp", "kind", "status", "steps", "tokens/s", "cpu s", "cpu share", "foreign share", "cores"]
    rows = [[r["id"], r["kind"], r["status"], _f(r["steps"], "d"), _f(r["tokens_per_s"], ",.0f"),
             _f(r["cpu_s"], ".1f"), _f(r["cpu_share"], ".2f"), _f(r["foreign_share"], ".2f"), r["cores"] or "–"]
            for r in run_tables.throughput_rows(tables)[-THROUGHPUT_ROWS:]]
    return header, rows


def _median(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summary_html(run: dict, pngs: dict[str, bytes]) -> str:
    t, cfg, meta, d = run["tables"], run["config"], run["meta"], run["run_dir"]
    num = run_tables.num
    name, target = cfg.get("name") or d.name, cfg.get("target", "")
    done = run_tables.done_experiments(t)
    prog = run_tables.progress_data(t)
    learn = run_tables.learning_data(t)
    acc = prog["accepted"]
    noise = meta.get("noise") if isinstance(meta.get("noise"), dict) else {}
    sigma = num(noise.get("sigma"))
    dof = run_tables.as_int(noise.get("dof"))
    base = run_tables.baseline_value(t)
    best = min(acc, key=lambda a: a["val_bpb"]) if acc else None
    pol, wk = cfg.get("policy") or {}, cfg.get("workers") or {}
    state = str(meta.get("status", "starting")) + (f" ({meta['stop_reason']})" if meta.get("stop_reason") else "")
    parts = [(f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>arrl report: {_e(name)}</title>"
              f"<style>{CSS}</style></head><body>"),
             f"<h1>arrl run {_e(name)}</h1>",
             (f"<p class='sub'>target <b>{_e(target)}</b>, policy {_e(pol.get('kind'))} ({_e(pol.get('fmt'))}"
              f"{', model ' + _e(pol.get('model')) if pol.get('kind') == 'vllm' else ''}), "
              f"{_e(wk.get('count'))} worker(s), sandbox {_e(wk.get('sandbox'))}; status <b>{_e(state)}</b>; "
              f"report written {_e(time.strftime('%Y-%m-%d %H:%M:%S'))}</p>")]
    c = prog["counts"]
    kv = [["experiments finished", c["total"]], ["pending or running", prog["in_flight"]],
          ["baseline val_bpb (median of ok baselines)", _f(base)],
          ["noise σ", _f(sigma) + (f" (robust, {dof} dof)" if sigma is not None and dof is not None else "")]]
    if noise.get("warning"):
        kv.append(["noise warning", " ".join(str(noise["warning"]).split())])
    kv += [["best val_bpb", _f(best["val_bpb"]) + f" (exp {best['exp_id']})" if best else "–"],
           ["improvement over the baseline", _f(base - best["val_bpb"] if best and base is not None else None,
                                                "+.4f")],
           ["accepted edits", len(acc)]]
    gaps = run_tables.gap_data(t)
    last = gaps["incumbents"][-1] if gaps["incumbents"] else None
    if t.get("test_scores") and last:
        kv.append(["val/test gap of the incumbent", _f(last["gap"], "+.4f") + (
            f" (test {_f(last['test'])}, val {_f(last['val'])})" if last["gap"] is not None else " (not scored)")])
    thr = prog["throughput"]
    reruns = run_tables.contended_reruns(t)
    n_contended = sum(1 for r in done if r.get("status") == "contended")
    if thr or reruns or n_contended:
        kv.append(["contended", f"{len(reruns)} re-run(s) after too little compute, {n_contended} run(s) ended "
                                "contended"])
    if isinstance(meta.get("placement"), dict) and meta["placement"]:
        from arrl.report import status as report

        kv.append(["placement", report.placement_line(meta["placement"]).removeprefix("placement: ")])
    links = lineage.chain(d)
    if links:
        kv.append(["lineage", lineage.describe(links) + f" (adapter sha256 {links[0]['adapter_sha256'][:12]})"])
    parts.append(html_table(None, kv, cls="kv key-numbers"))
    parts.append("<h2>Progress</h2>")
    parts.append(_img(pngs["progress.png"], "val_bpb of every experiment and the incumbent"))
    parts.append("<h2>Policy learning</h2>")
    parts.append(_img(pngs["learning.png"], "reward by adapter version, learner KL and clip fraction"))

    parts.append("<h2>Best edit</h2>")
    if best:
        parts.append(f"<p>exp {best['exp_id']}: {_e(run_tables.shorten(best['summary'], 200))} — val_bpb "
                     f"{_f(best['prev_bpb'])} → {_f(best['val_bpb'])}, commit <code>{_e(best['commit_sha'])}</code>."
                     f" Its diff against the incumbent it was proposed for:</p>")
        parts.append(f"<pre class='diff'>{_e(best['diff']) or '(no diff recorded)'}</pre>")
        cum = _cumulative_diff(d, t, best["exp_id"])
        if cum and cum.strip() != (best["diff"] or "").strip():
            parts.append("<p>All accepted changes together, from the baseline's train.py:</p>")
            parts.append(f"<pre class='diff'>{_e(cum)}</pre>")
    else:
        parts.append("<p class='empty'>no accepted edit yet</p>")

    parts.append("<h2>Accepted edits</h2>")
    if acc:
        header, rows = accepted_table(t, sigma)
        parts.append(html_table(header, rows, numeric={0, 1, 2, 3} | ({4} if sigma else set()), cls="accepted"))
    else:
        parts.append("<p class='empty'>none</p>")

    if t.get("test_scores"):
        parts.append("<h2>Validation vs test</h2>")
        parts.append("<p>Each incumbent's model scored on the sealed test split (never used for a reward, an "
                     "acceptance or an abort): test_bpb is the median of its runs' ok scores; the gap is "
                     "test − val, where val is the value acceptance used.</p>")
        parts.append(_img(pngs[GAP_FILE], "val_bpb and test_bpb of each incumbent, and their gap"))
        header, rows = incumbents_table(t)
        parts.append(html_table(header, rows, numeric={0, 1, 3, 4, 5, 6}, cls="incumbents"))

    parts.append("<h2>Experiments by status</h2>")
    kinds = ("baseline", "candidate", "confirm")
    by: dict[str, dict[str, int]] = {}
    for r in done:
        by.setdefault(r.get("status") or "?", {}).setdefault(r.get("kind") or "?", 0)
        by[r.get("status") or "?"][r.get("kind") or "?"] += 1
    rows = [[s, *[by[s].get(k, 0) for k in kinds], sum(by[s].values())] for s in sorted(by)]
    rows.append(["all", *[sum(by[s].get(k, 0) for s in by) for k in kinds], len(done)])
    parts.append(html_table(["status", *kinds, "total"], rows, numeric={1, 2, 3, 4}, cls="status"))
    parts.append("<p>Failed edits and rejected edits use no worker; reused results (an edit already run) are "
                 "answered from the ledger.</p>")

    parts.append("<h2>Timings</h2>")
    wall = num(meta.get("wall_s"))
    workers = run_tables.as_int(wk.get("count")) or 1
    busy = sum(num(r.get("wall_s")) or 0.0 for r in done)
    kv = [["wall clock of the driver", _f(wall, ".1f") + " s" if wall else "–"],
          ["worker busy fraction", f"{busy / (workers * wall):.0%}" if wall else "–"],
          ["sum of experiment wall time", f"{busy:.1f} s"]]
    parts.append(html_table(None, kv, cls="kv"))
    rows = []
    for s in sorted(by):
        rs = [r for r in done if (r.get("status") or "?") == s]
        row = [s, len(rs), _f(_median(num(r.get("train_s")) for r in rs), ".2f"),
               _f(_median(num(r.get("wall_s")) for r in rs), ".2f")]
        if thr:
            m = run_tables.throughput_summary([x for x in thr if (x["status"] or "?") == s])
            row += [_f(m["steps"], ".0f"), _f(m["tokens_per_s"], ",.0f"), _f(m["cpu_share"], ".2f")]
        rows.append(row)
    header = ["status", "n", "median train_s", "median wall_s"]
    if thr:
        header += ["median steps", "median tokens/s", "median cpu share"]
    parts.append(html_table(header, rows, numeric=set(range(1, len(header))), cls="timings"))
    if thr:
        parts.append("<h3>Throughput</h3>")
        parts.append("<p>Steps, tokens per second of training and CPU share (CPU seconds the run's processes got "
                     "/ (its training wall time × its cores); 1.0 = its cores fully busy) and foreign share "
                     "(the share of its cores other processes took) of the runs that recorded them.</p>")
        header, rows = throughput_table(t)
        parts.append(html_table(header, rows, numeric={0, 3, 4, 5, 6, 7}, cls="throughput"))
    if reruns:
        parts.append("<h3>Contended re-runs</h3>")
        rows = [[run_tables.as_int(e.get("exp")), run_tables.as_int(e.get("attempt")), _f(num(e.get("cpu_share")), ".2f"),
                 _f(num(e.get("tokens_per_s")), ",.0f"), run_tables.shorten(e.get("reason"), 160)] for e in reruns]
        parts.append(html_table(["exp", "attempt", "cpu share", "tokens/s", "reason"], rows, numeric={0, 1, 2, 3},
                                cls="contended"))
    parts.append("<h3>Learner updates</h3>")
    if learn["updates"]:
        rows = [[u["version"], u["samples_in"] if u["samples_in"] is not None else "–", _f(u["reward_mean"], "+.3f"),
                 _f(u["kl"], ".4f"), _f(u["clip_fraction"], ".3f"), _f(u["update_s"], ".1f"), _f(u["sync_s"], ".2f")]
                for u in learn["updates"]]
        parts.append(html_table(["version", "samples", "reward mean", "KL", "clip fraction", "update s", "sync s"],
                                rows, numeric=set(range(7)), cls="learner"))
        med = _median(u["update_s"] for u in learn["updates"])
        parts.append(f"<p>median update time {_f(med, '.1f')} s over {len(learn['updates'])} update(s)</p>")
    else:
        parts.append("<p class='empty'>no learner updates</p>")

    parts.append("<h2>Run config</h2>")
    parts.append(f"<pre>{_e(json.dumps(cfg, indent=1, sort_keys=False))}</pre>")
    parts.append(f"<p class='sub'>run directory {_e(d)}</p></body></html>\n")
    return "\n".join(parts)


def _img(png: bytes, alt: str) -> str:
    return f"<p><img alt='{_e(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'></p>"


def _cumulative_diff(d: Path, tables: dict, exp_id: int) -> str:
    """Unified diff from the first baseline's train.py to experiment exp_id's (empty if either is missing)."""
    base = [r for r in run_tables.done_experiments(tables) if r.get("kind") == "baseline"]
    if not base:
        return ""
    a = d / "experiments" / f"{run_tables.as_int(base[0]['id']):06d}" / "train.py"
    b = d / "experiments" / f"{exp_id:06d}" / "train.py"
    try:
        old, new = a.read_text().splitlines(keepends=True), b.read_text().splitlines(keepends=True)
    except (OSError, UnicodeDecodeError):
        return ""
    return "".join(difflib.unified_diff(old, new, "a/train.py", "b/train.py"))
