"""`arrl report` and the analysis notebook on a real recorded run.

The run is the real loop on a local Ray (3 fake GPUs) with the synthetic target, the simulated
backend and a scripted policy whose edits improve, worsen, crash, fail to apply and get
rejected: about 40 experiments in every category in under 15 s. Learner updates are too slow
for this file, so one test adds policy versions to a copy of the ledger through arrl.ledger.store.
"""

from __future__ import annotations

import base64
import html
import io
import json
import shutil
import sqlite3
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from arrl import cli
from arrl.report import figures
from arrl.report import tables as run_tables
from arrl.report import summary

ROOT = Path(__file__).resolve().parents[2]


def block(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


# Cycled by the scripted policy: four improvements (different knobs, so they stack), two worse
# edits, a value the simulated backend cannot score (crash), a SEARCH text that is not there
# (edit_failed), a network import (rejected). Once an improvement is accepted its SEARCH text is
# gone, so its next turn is an edit_failed too.
SCRIPT = [block("DECAY = 0.0", "DECAY = 0.1"), block("DEPTH = 4", "DEPTH = 5"),
          block("DROPOUT = 0.0", "DROPOUT = 0.1"), block("WIDTH = 128", "WIDTH = 32"),
          block("NOT_A_KNOB = 1", "NOT_A_KNOB = 2"), block("BETA2 = 0.95", "BETA2 = 0.99"),
          block("DEPTH = 4", "import socket\nDEPTH = 4"), block("WARMUP = 10", "WARMUP = 50"),
          block("LEARNING_RATE = 1e-3", "LEARNING_RATE = 1e-4")]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    import ray

    from arrl import config as config_mod
    from arrl.launch import launch

    cfg = config_mod.from_dict({
        "target": "synthetic", "name": "report-run",
        "policy": {"kind": "scripted", "fmt": "search_replace", "group_size": 3, "completions": SCRIPT},
        "workers": {"count": 3, "gpus_per_worker": 1.0, "sandbox": "simulated", "budget_s": 0.2},
        "search": {"noise_runs": 3}, "oracle": {"max_experiments": 24}})
    runs = tmp_path_factory.mktemp("report") / "runs"
    # a Ray of this test's own: a cluster someone started on this machine with `ray start` is not joined
    owns = not ray.is_initialized()
    if owns:
        ray.init(address="local", num_cpus=5, num_gpus=3, logging_level="ERROR", log_to_driver=False)
    try:
        reason, d = launch(cfg, runs=runs, log=lambda s: None)
    finally:
        if owns:
            ray.shutdown()
    assert reason.startswith("experiment budget reached"), reason
    return d


def ledger(d: Path) -> dict:
    db = sqlite3.connect(d / "ledger.sqlite")
    try:
        def one(q):
            return db.execute(q).fetchone()[0]

        acc = "(SELECT exp_id FROM accepted)"
        return {
            "total": one("SELECT COUNT(*) FROM experiments WHERE state='done'"),
            # drawn in the "no usable val_bpb" band: no val_bpb, or a run that ended contended
            "failed": one("SELECT COUNT(*) FROM experiments WHERE state='done' AND (val_bpb IS NULL OR "
                          "status='contended')"),
            "baseline": one("SELECT COUNT(*) FROM experiments WHERE state='done' AND kind='baseline' AND "
                            "val_bpb IS NOT NULL AND status!='contended'"),
            "accepted": one(f"SELECT COUNT(*) FROM experiments WHERE state='done' AND val_bpb IS NOT NULL AND "
                            f"(id IN {acc} OR (kind='confirm' AND parent IN {acc}))"),
            "accepted_ids": [r[0] for r in db.execute("SELECT exp_id FROM accepted ORDER BY created, exp_id")],
            "best": db.execute("SELECT e.diff FROM accepted a JOIN experiments e ON e.id=a.exp_id "
                               "ORDER BY a.val_bpb LIMIT 1").fetchone(),
            "rewards": one("SELECT COUNT(*) FROM experiments WHERE state='done' AND kind='candidate' AND "
                           "reward IS NOT NULL"),
            "test_scores": one("SELECT COUNT(*) FROM test_scores")
            if one("SELECT COUNT(*) FROM sqlite_master WHERE name='test_scores'") else 0,
        }
    finally:
        db.close()


class Page(HTMLParser):
    """The parts of summary.html the tests look at."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.imgs, self.refs, self.tags, self.stack = [], [], [], []
        self.tables: dict[str, list[list[str]]] = {}
        self.pre: list[str] = []
        self._table = self._row = self._cell = self._pre = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag not in ("meta", "img", "br", "hr", "link"):
            self.stack.append(tag)
        for k in ("src", "href"):
            if a.get(k):
                self.refs.append(a[k])
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag == "table":
            self._table = a.get("class") or f"table{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "pre":
            self._pre = ([], a.get("class"))

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "pre":
            if self._pre[1] == "diff":
                self.pre.append("".join(self._pre[0]))
            self._pre = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._pre is not None:
            self._pre[0].append(data)


def parse(path: Path) -> Page:
    p = Page()
    p.feed(path.read_text(encoding="utf-8"))
    p.close()
    assert p.stack == [], p.stack  # every element closed
    return p


def decode_png(data: bytes):
    import matplotlib.image as mpimg

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return mpimg.imread(io.BytesIO(data), format="png")


def assert_drawn(img) -> None:
    h, w = img.shape[:2]
    assert h >= 300 and w >= 500 and img.shape[2] in (3, 4)
    rgb = img[..., :3]
    assert rgb.std() > 0.05  # not blank
    assert (rgb.min(axis=2) < 0.5).mean() > 0.01  # a fair share of dark (drawn) pixels


def report(args: list[str], capsys) -> tuple[int, str, str]:
    rc = cli.main(["report", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_report_of_a_recorded_run(run, capsys):
    want = ledger(run)
    assert want["failed"] and want["accepted_ids"] and want["total"] >= 30  # every category is exercised
    rc, out, err = report([run.name, "--runs-dir", str(run.parent)], capsys)
    assert rc == 0, err
    rep = run / "report"
    gap = [summary.GAP_FILE] if want["test_scores"] else []  # gap.png only for a run with test scores
    assert out.split() == [str(rep / f) for f in [*summary.FILES[:2], *gap, summary.FILES[2]]]

    # progress.png: a real image, with one point per finished experiment in its metadata
    png = (rep / "progress.png").read_bytes()
    assert_drawn(decode_png(png))
    counts = figures.png_metadata(png)
    assert counts == {"total": want["total"], "failed": want["failed"], "baseline": want["baseline"],
                      "accepted": want["accepted"],
                      "discarded": want["total"] - want["failed"] - want["baseline"] - want["accepted"]}
    # ... and in the figure itself: the scatter collections hold exactly one offset per experiment
    tables = run_tables.read_tables(run / "exports")
    fig = figures.progress_figure(tables, "report-run", "synthetic")
    drawn = {c.get_gid(): len(c.get_offsets()) for c in fig.axes[0].collections if c.get_gid()}
    assert sum(drawn.values()) == want["total"]
    assert drawn["failed"] == want["failed"]
    assert sum(n for g, n in drawn.items() if g.startswith("accepted/")) == want["accepted"]
    xs = sorted(int(x) for c in fig.axes[0].collections if c.get_gid() for x, _ in c.get_offsets())
    assert xs == sorted(r["id"] for r in tables["experiments"] if r["state"] == "done")
    labels = {t.get_text() for t in fig.axes[0].texts}
    assert {run_tables.shorten(r["summary"]) for r in tables["experiments"] if r["id"] in want["accepted_ids"]} <= labels

    # learning.png without a learner: rewards drawn, the updates panel says there were none
    png = (rep / "learning.png").read_bytes()
    assert_drawn(decode_png(png))
    assert figures.png_metadata(png) == {"rewards": want["rewards"], "versions": 0}
    lfig = figures.learning_figure(tables)
    assert any("no learner updates" in t.get_text() for a in lfig.axes for t in a.texts)

    # summary.html: parses, self-contained, images decode, the tables match the ledger
    page = parse(rep / "summary.html")
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    assert all(r.startswith("data:image/png;base64,") for r in page.refs), page.refs  # no external request
    assert len(page.imgs) == 2 + len(gap)
    for src in page.imgs:
        assert_drawn(decode_png(base64.b64decode(src.split(",", 1)[1], validate=True)))
    rows = page.tables["accepted"]
    assert rows[0][:3] == ["exp", "prev val_bpb", "new val_bpb"]
    assert [int(r[0]) for r in rows[1:]] == want["accepted_ids"]
    assert page.pre[0] == want["best"][0]  # the best accepted edit's diff, escaped and read back intact
    status = {r[0]: r for r in page.tables["status"][1:]}
    assert int(status["all"][-1]) == want["total"]
    html_text = (rep / "summary.html").read_text()
    assert html.escape("<<<<<<< SEARCH") in html_text  # the config's completions, escaped
    assert "<<<<<<<" not in html_text

    # a second report overwrites the first, and --out puts it elsewhere
    rc, out, _ = report([run.name, "--runs-dir", str(run.parent), "--out", str(run.parent / "elsewhere")], capsys)
    assert rc == 0 and (run.parent / "elsewhere" / "summary.html").is_file()


def test_learning_figure_with_learner_updates(run, tmp_path, capsys):
    """Policy versions added to a copy of the ledger (as arrl.driver.learning records them) are plotted per version."""
    from arrl.ledger.store import Store

    d = tmp_path / "runs" / run.name
    shutil.copytree(run, d, ignore=shutil.ignore_patterns("report", "exports"))
    s = Store(d)
    ups = [{"reward_mean": -0.4, "update_s": 12.5, "samples_in": 8, "metrics": {"kl": 0.002, "clip_fraction": 0.05}},
           {"reward_mean": 0.9, "update_s": 11.0, "samples_in": 8, "metrics": {"kl": 0.006, "clip_fraction": 0.12}}]
    with s.tx():
        for v, info in enumerate(ups, 1):
            s.add_policy_version(v, **info, adapter_sha256="0" * 64)
        s.update_policy_version(1, loaded_at=1.0, swap_s=0.1, sync_s=0.8)
        cands = [r[0] for r in s.db.execute("SELECT proposal_id FROM experiments WHERE kind='candidate' AND "
                                            "proposal_id IS NOT NULL ORDER BY id")]
        for i, pid in enumerate(cands):  # later proposals came from later adapters
            s.db.execute("UPDATE proposals SET adapter_version=? WHERE id=?", (3 * i // len(cands), pid))
    s.close()
    out_dir = tmp_path / "out"
    rc, _, err = report([run.name, "--runs-dir", str(d.parent), "--out", str(out_dir)], capsys)
    assert rc == 0, err
    png = (out_dir / "learning.png").read_bytes()
    assert_drawn(decode_png(png))
    assert figures.png_metadata(png) == {"rewards": ledger(d)["rewards"], "versions": 2}
    tables = run_tables.read_tables(d / "exports")
    fig = figures.learning_figure(tables)
    lines = {ln.get_gid(): list(ln.get_ydata()) for a in fig.axes for ln in a.lines if ln.get_gid()}
    assert lines["kl"] == [0.002, 0.006] and lines["clip_fraction"] == [0.05, 0.12]
    assert lines["reward_mean"] == [-0.4, 0.9]
    gids = {c.get_gid() for c in fig.axes[0].collections}
    assert gids == {f"{k}/v{v}" for k in ("reward", "mean") for v in (0, 1, 2)}
    assert sum(len(c.get_offsets()) for c in fig.axes[0].collections if c.get_gid().startswith("reward/")) \
        == ledger(d)["rewards"]
    assert not any("no learner updates" in t.get_text() for a in fig.axes for t in a.texts)
    page = parse(out_dir / "summary.html")
    assert [r[0] for r in page.tables["learner"][1:]] == ["1", "2"]


def test_empty_and_broken_runs(tmp_path, capsys):
    from arrl.ledger.store import Store

    runs = tmp_path / "runs"
    d = runs / "empty"
    Store(d).close()
    (d / "config.json").write_text(json.dumps({"name": "empty", "target": "synthetic", "workers": {"count": 2}}))
    rc, _, err = report(["empty", "--runs-dir", str(runs)], capsys)
    assert rc == 0, err
    assert figures.png_metadata((d / "report" / "progress.png").read_bytes())["total"] == 0
    fig = figures.progress_figure(run_tables.read_tables(d / "exports"))
    assert any(t.get_text() == "no experiments yet" for t in fig.axes[0].texts)
    page = parse(d / "report" / "summary.html")
    assert "accepted" not in page.tables and len(page.imgs) == 2

    (d / "config.json").unlink()
    rc, _, err = report(["empty", "--runs-dir", str(runs)], capsys)
    assert rc == 2 and err.count("\n") == 1 and "config.json" in err

    (d / "config.json").write_text("{not json")
    rc, _, err = report(["empty", "--runs-dir", str(runs)], capsys)
    assert rc == 2 and err.count("\n") == 1 and "config.json: unreadable" in err

    (d / "config.json").write_text("{}")
    for p in d.glob("ledger.sqlite*"):
        p.unlink()
    (d / "ledger.sqlite").write_bytes(b"this is not a database" * 100)
    rc, _, err = report(["empty", "--runs-dir", str(runs)], capsys)
    assert rc == 2 and err.count("\n") == 1 and "ledger.sqlite: the ledger is unreadable" in err, err

    rc, _, err = report(["missing", "--runs-dir", str(runs)], capsys)
    assert rc == 2 and err.count("\n") == 1


def test_notebook_runs_against_the_run(run, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    path = ROOT / "notebooks" / "analysis.ipynb"
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)  # committed with outputs cleared
    assert any("parameters" in c.metadata.get("tags", []) and "ARRL_RUN_DIR" in c.source for c in code)
    # a kernel spec for this interpreter (first on JUPYTER_PATH), whatever other `python3` kernels the machine has
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "arrl test kernel", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("ARRL_RUN_DIR", str(run))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    images = [o["data"]["image/png"] for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2 + bool(ledger(run)["test_scores"])  # the gap figure only for a run with test scores
    for b64 in images:
        assert_drawn(decode_png(base64.b64decode(b64)))
    texts = "".join(o.get("text", "") for c in code for o in c.outputs)
    assert f"run {run.name}" in texts
    assert any("text/html" in o.get("data", {}) and "<table" in o["data"]["text/html"] for c in code for o in c.outputs)


def test_figures_from_plain_tables():
    """A run in progress, as plain rows: unfinished experiments are not drawn but counted; NaN is no val_bpb."""
    def exp(i, kind="candidate", state="done", status="ok", bpb=None, parent=None, reward=None, pid=None):
        return {"id": i, "kind": kind, "state": state, "status": status, "val_bpb": bpb, "parent": parent,
                "reward": reward, "proposal_id": pid, "summary": f"edit {i}", "diff": ""}

    tables = {
        "experiments": [exp(1, "baseline", bpb=1.20), exp(2, "baseline", status="crash"),
                        exp(3, bpb=1.10, reward=5.0, pid="p3"), exp(4, status="nan", bpb=float("nan"), reward=-1.0,
                                                                     pid="p4"),
                        exp(5, "confirm", bpb=1.12, parent=3), exp(6, bpb=1.25, reward=-5.0, pid="p6"),
                        exp(7, state="running"), exp(8, state="pending")],
        "accepted": [{"exp_id": 3, "created": 10.0, "val_bpb": 1.11, "prev_bpb": 1.20, "commit_sha": "abc"}],
        "proposals": [{"id": "p3", "adapter_version": 0}, {"id": "p4", "adapter_version": 1},
                      {"id": "p6", "adapter_version": 1}],
        "policy_versions": [{"version": 1, "created": 5.0, "info": json.dumps({"reward_mean": 0.5, "metrics": {}})}],
    }
    data = run_tables.progress_data(tables)
    assert data["counts"] == {"baseline": 1, "accepted": 2, "discarded": 1, "failed": 2, "total": 6}
    assert data["in_flight"] == 2
    assert data["incumbent"] == [(1, 1.20), (5, 1.11), (6, 1.11)]  # the step comes with the confirmation
    fig = figures.progress_figure(tables, "live", "synthetic")
    assert sum(len(c.get_offsets()) for c in fig.axes[0].collections) == 6
    assert "2 pending or running" in fig.axes[0].get_title()
    learn = run_tables.learning_data(tables)
    assert learn["rewards"] == [(3, 5.0, 0), (4, -1.0, 1), (6, -5.0, 1)]
    assert learn["version_means"] == {0: (5.0, 3, 3, 1), 1: (-3.0, 4, 6, 2)}
    assert learn["updates"][0]["kl"] is None  # a version without metrics is drawn without them
    assert figures.png_metadata(figures.png_bytes(figures.learning_figure(tables), learn["counts"])) == \
        {"rewards": 3, "versions": 1}


def test_policy_text_with_dollar_signs_is_drawn_verbatim():
    """Edit summaries are the policy's text: `$...$` must not reach matplotlib's mathtext parser."""
    import io

    tables = {"experiments": [
        {"id": 1, "kind": "baseline", "state": "done", "status": "ok", "val_bpb": 1.2, "summary": "baseline",
         "parent": None, "reward": None, "created": 1.0, "adapter_version": None},
        {"id": 2, "kind": "candidate", "state": "done", "status": "ok", "val_bpb": 1.1,
         "summary": "x = cost_$ * 2  # in $^", "parent": None, "reward": 3.0, "created": 2.0},
    ], "accepted": [{"exp_id": 2, "val_bpb": 1.1, "prev_bpb": 1.2, "created": 3.0, "commit_sha": "abc"}],
        "proposals": [], "policy_versions": [], "samples": [], "events": []}
    fig = figures.progress_figure(tables)
    fig.savefig(io.BytesIO(), format="png")  # mathtext would raise ParseException while drawing
    assert any("cost_$ * 2" in t.get_text() for t in fig.axes[0].texts)
