"""The population search (`[search] strategy = "population"`, arrl.driver.archive): the archive in the ledger,
elites confirmed within noise, migration, parents and inspirations; a short population run on the simulated
target with the three-basin landscape, and a driver killed with SIGKILL and resumed."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys

import pytest

from arrl import config as config_mod
from arrl import paths
from arrl import target as target_mod
from arrl.config import ConfigError
from arrl.driver import archive as archive_mod
from arrl.driver import noise
from arrl.driver.acceptance import Acceptance, Incumbent
from arrl.driver.archive import Archive
from arrl.ledger.store import Store
from arrl.policy import prompt
from ledgers import kill_when

SIGMA = 0.002
POP = {"target": "synthetic-basins",
       "policy": {"kind": "random", "fmt": "catalog", "group_size": 4},
       "workers": {"count": 2, "gpus_per_worker": 1.0, "sandbox": "simulated", "budget_s": 0.2},
       "search": {"noise_runs": 2, "min_sigma": 0.001, "strategy": "population", "islands": 2,
                  "niches": ["knob:DEPTH", "knob:WIDTH"], "migrate_every": 6, "inspirations": 2},
       "oracle": {"max_experiments": 36}}


def basins():
    return target_mod.load("synthetic-basins", paths.targets_dir())


def search(**kw):
    s = config_mod.Config().search
    s.strategy, s.islands, s.niches, s.migrate_every = "population", 2, ["knob:DEPTH", "knob:WIDTH"], 2
    for k, v in kw.items():
        setattr(s, k, v)
    return s


def with_knobs(src: str, **knobs) -> str:
    for k, v in knobs.items():
        src = re.sub(rf"^{k} = .*$", f"{k} = {v}", src, flags=re.M)
    return src


class Ledger:
    """A run's ledger filled by hand: baselines, then candidates with the values they measured."""

    def __init__(self, root, tgt):
        self.store, self.tgt = Store(root), tgt
        for v in (1.060, 1.061):
            self.run("baseline", tgt.source(), v)

    def run(self, kind: str, src: str, value: float | None, island: int | None = None, parent: int | None = None,
            status: str = "ok") -> int:
        from arrl.driver.identity import normalize, sha

        s = self.store
        with s.tx():
            eid = s.add_experiment(kind, len(s.experiments()), sha(src), sha(normalize(src)), None, parent, 1,
                                   island=island)
            s.write_source(eid, src)
            s.finish(eid, status=status, val_bpb=value, outcome={"status": status, "timings": {}})
        return eid

    def trained(self, archive: Archive, src: str, values: list, island: int) -> int:
        first = self.run("candidate", src, values[0], island)
        with self.store.tx():
            archive.add_run(self.store.experiment(first), src, {}, SIGMA)
        for v in values[1:]:
            self.run("confirm", src, v, island, parent=first)
        return first


def test_descriptors_are_buckets_and_missing_ones_are_none():
    tgt = basins()
    src = with_knobs(tgt.source(), DEPTH=12, WIDTH=384)
    out = {"model_bytes": 4 * 2 ** 20, "tokens": 6000, "timings": {"train_s": 3.0}}
    d = archive_mod.descriptors(["size", "speed", "knob:DEPTH", "knob:WIDTH"], tgt.catalog, src, out)
    assert d == {"size": 22, "speed": 11, "knob:DEPTH": 3, "knob:WIDTH": 3}  # 2000 tokens/s: 2^11
    # a run that cannot give a descriptor (the simulated sandbox saves no model, counts no tokens): None
    d = archive_mod.descriptors(["size", "speed", "knob:DEPTH"], tgt.catalog, "DEPTH = 5\n", {"timings": {}})
    assert d == {"size": None, "speed": None, "knob:DEPTH": None}


@pytest.mark.parametrize("niches, says", [(["knob:NOPE"], "names no knob of the target's catalog"),
                                           (["loss"], "unknown descriptor 'loss'")])
def test_a_descriptor_the_target_cannot_have_is_one_line(tmp_path, niches, says):
    with pytest.raises(ConfigError, match=says) as e:
        Archive(Store(tmp_path), search(niches=niches), basins().catalog, 0.0, 2.0)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("over, says", [({"islands": 3}, "3 islands for 2 worker"),
                                        ({"confirm": False}, "needs confirm = true")])
def test_population_config_errors_are_one_line(over, says):
    data = json.loads(json.dumps(POP))
    data["search"].update(over)
    with pytest.raises(ConfigError, match=says) as e:
        config_mod.from_dict(data)
    assert "\n" not in str(e.value)


def test_an_elite_needs_two_runs_that_agree_and_only_elites_migrate(tmp_path):
    tgt = basins()
    led = Ledger(tmp_path, tgt)
    a = Archive(led.store, search(migrate_every=4), tgt.catalog, 0.0, 2.0)
    start = led.store.baselines()[0]["id"]
    assert [p.exp_id for p in a.elites(0, SIGMA).values()] == [start]  # the start program, on every island
    assert [p.exp_id for p in a.elites(1, SIGMA).values()] == [start]
    # one run, far better than the start: in the archive, not an elite
    lucky = led.trained(a, with_knobs(tgt.source(), DECAY="0.03"), [1.030], 0)
    # a noisy one: its second run disagrees by 10 sigma, so it is not promoted
    noisy = led.trained(a, with_knobs(tgt.source(), DROPOUT="0.1"), [1.035, 1.055], 0)
    # confirmed: two runs within noise, in another niche (DEPTH 12)
    deep = led.trained(a, with_knobs(tgt.source(), DEPTH="12"), [1.050, 1.051], 0)
    progs = {p.exp_id: p for p in a.programs(0, SIGMA)}
    assert not progs[lucky].confirmed and not progs[noisy].confirmed and progs[deep].confirmed
    elites = a.elites(0, SIGMA)
    assert sorted(p.exp_id for p in elites.values()) == [start, deep]
    assert a.best(0, SIGMA).exp_id == deep
    # a parent's value, which its children's rewards are measured against: the centre of its program's runs
    assert a.value_of(deep) == pytest.approx(1.0505) and a.value_of(start) == pytest.approx(1.0605)
    assert a.value_of(lucky) == pytest.approx(1.030)
    assert led.store.get("migrations") is None
    # the fourth program to train makes the first migration, in the transaction of its first run: island 0's best
    # elite, the confirmed one, joins island 1; no unconfirmed program moves
    led.trained(a, with_knobs(tgt.source(), BETA2="0.9"), [1.020], 0)
    moved = [r for r in led.store.programs(1) if r["via"] == "migrated"]
    assert [r["exp_id"] for r in moved] == [deep]
    assert led.store.get("migrations") == 1
    assert a.best(1, SIGMA).exp_id == deep
    # writing the same run again changes nothing (exactly once)
    with led.store.tx():
        a.add_run(led.store.experiment(deep), "", {}, SIGMA)
    assert len(led.store.programs()) == 5 and led.store.get("migrations") == 1


def test_parents_and_inspirations_are_drawn_from_the_island_and_a_missing_parent_is_skipped(tmp_path):
    tgt = basins()
    led = Ledger(tmp_path, tgt)
    logged = []
    a = Archive(led.store, search(migrate_every=0, exploit=0.0, inspirations=1), tgt.catalog, 0.0, 2.0,
                log=logged.append)
    deep = led.trained(a, with_knobs(tgt.source(), DEPTH="12"), [1.050, 1.051], 0)
    wide = led.trained(a, with_knobs(tgt.source(), WIDTH="384"), [1.045, 1.046], 1)
    start = led.store.baselines()[0]["id"]
    drawn = [a.choose(n, "seed", SIGMA) for n in range(40)]
    assert [i for i, _, _ in drawn] == [0, 1] * 20  # as many candidates on each: request number mod islands
    assert {p.exp_id for i, p, _ in drawn if i == 0} == {start, deep}  # exploit 0: every niche's elite
    assert {p.exp_id for i, p, _ in drawn if i == 1} == {start, wide}  # never another island's program
    for i, p, insp in drawn:
        assert len(insp) == 1 and insp[0].exp_id != p.exp_id and insp[0].island == i
    assert drawn == [a.choose(n, "seed", SIGMA) for n in range(40)]  # the same ledger, the same parents
    (led.store.exp_dir(deep) / "train.py").unlink()
    again = [a.choose(n, "seed", SIGMA) for n in range(0, 40, 2)]
    assert {p.exp_id for _, p, _ in again} == {start}
    assert sum("no longer drawn" in m for m in logged) == 1  # said once
    # an island whose parents had fewer candidates gets the next request, whatever its number
    led.run("candidate", with_knobs(tgt.source(), DECAY="0.3"), 1.07, island=0)
    assert [a.choose(n, "seed", SIGMA)[0] for n in range(4)] == [1, 1, 1, 1]


def test_with_confirm_best_a_lucky_run_is_an_exploring_parent_and_never_an_elite(tmp_path):
    tgt = basins()
    led = Ledger(tmp_path, tgt)
    a = Archive(led.store, search(migrate_every=3, exploit=0.0, inspirations=2, confirm_elites="best"),
                tgt.catalog, 0.0, 2.0)
    start = led.store.baselines()[0]["id"]
    wide = led.trained(a, with_knobs(tgt.source(), WIDTH="384"), [1.045, 1.046], 0)  # confirmed: the best
    lucky = led.trained(a, with_knobs(tgt.source(), DEPTH="12"), [1.030], 0)  # one run, a niche without an elite
    worse = led.trained(a, with_knobs(tgt.source(), DEPTH="12", DECAY="0.3"), [1.040], 0)  # same niche, worse
    inside = led.trained(a, with_knobs(tgt.source(), DECAY="0.03"), [1.020], 0)  # one run in the start's niche
    for lr in ("1", "2", "3", "4"):  # as many candidates on island 1 (crashed), so requests alternate
        led.run("candidate", with_knobs(tgt.source(), WARMUP=lr), None, island=1, status="crash")
    reps = a.representatives(0, SIGMA)
    assert sorted(p.exp_id for p in reps.values()) == sorted([start, wide, lucky])  # one per niche
    assert sorted(p.exp_id for p in a.elites(0, SIGMA).values()) == sorted([start, wide])
    assert a.best(0, SIGMA).exp_id == wide  # 1.030 is lower, but one run is no elite
    drawn = [a.choose(n, "seed", SIGMA) for n in range(0, 80, 2)]  # even requests: island 0
    assert {i for i, _, _ in drawn} == {0}
    assert {p.exp_id for _, p, _ in drawn} == {start, wide, lucky}  # exploit 0: every niche's parent
    assert worse not in {p.exp_id for _, p, _ in drawn} and inside not in {p.exp_id for _, p, _ in drawn}
    assert all(x.confirmed for _, _, insp in drawn for x in insp)  # inspirations are elites only
    # the third program to train made the first migration: the confirmed best, never the lucky run
    assert sorted(r["exp_id"] for r in led.store.programs(1) if r["via"] == "migrated") == [wide]
    # the same ledger read with confirm_elites = "niche": elites alone are parents
    b = Archive(led.store, search(migrate_every=3, exploit=0.0, confirm_elites="niche"), tgt.catalog, 0.0, 2.0)
    assert {p.exp_id for i, p, _ in (b.choose(n, "seed", SIGMA) for n in range(0, 80, 2))} == {start, wide}


class Judge(Acceptance):
    """The acceptance chain's confirmation rule for a population run, on a hand-made ledger."""

    def __init__(self, store, archive, search_, inc):
        self.store, self.archive, self.cfg = store, archive, config_mod.Config()
        self.cfg.search = search_
        self.noise, self.incumbent, self.scheduled = noise.Noise(SIGMA, 4, SIGMA, 2), inc, []

    def _runs_of(self, norm):
        return self.store.trained_runs_of(norm)

    def _schedule_confirm(self, row):
        self.scheduled.append(row["id"])


@pytest.mark.parametrize("mode, confirmed", [("niche", ["opens", "best"]), ("best", ["best"])])
def test_which_runs_earn_a_confirmation(tmp_path, mode, confirmed):
    tgt = basins()
    led = Ledger(tmp_path, tgt)
    s = search(migrate_every=0, confirm_elites=mode)
    a = Archive(led.store, s, tgt.catalog, 0.0, 2.0)
    src = with_knobs(tgt.source(), WIDTH="384")
    wide = led.trained(a, src, [1.045, 1.046], 0)
    judge = Judge(led.store, a, s, Incumbent(wide, src, [1.045, 1.046]))
    runs = {"opens": (with_knobs(tgt.source(), DEPTH="12"), 1.050),  # a new niche, behind the island's best
            "best": (with_knobs(tgt.source(), DEPTH="3"), 1.030),  # a new niche, ahead of the island's best
            "behind": (with_knobs(tgt.source(), DECAY="0.3"), 1.070)}  # the start's niche, behind its elite
    ids = {}
    for name, (src_, v) in runs.items():
        ids[name] = led.trained(a, src_, [v], 0)
        judge._maybe_confirm(led.store.experiment(ids[name]), "ok", v)
    assert judge.scheduled == [ids[n] for n in confirmed]


def test_inspirations_are_shown_and_a_greedy_prompt_is_unchanged():
    tgt = basins()
    st = prompt.PolicyState(target="t", program="p", source=tgt.source(), fmt="catalog", incumbent_bpb=1.06,
                            catalog=tgt.catalog)
    shown = prompt.PolicyState(**{**st.__dict__, "inspirations": ("DEPTH = 12 -> val_bpb 1.0500 (2 runs)",)})
    text = prompt.build(shown, 4000, seed=1).messages[1]["content"]
    assert "Other programs in the archive" in text and "DEPTH = 12 -> val_bpb 1.0500 (2 runs)" in text
    plain = prompt.build(st, 4000, seed=1)
    assert "Other programs" not in plain.messages[1]["content"]
    assert plain.version != prompt.build(shown, 4000, seed=1).version  # its template is in the version's hash
    assert st.key != shown.key


def read_archive(d, look):
    """`look(archive, sigma, config, store)` on the archive read from a run's ledger, at the noise the driver
    derives from it."""
    cfg = config_mod.from_dict(json.loads((d / "config.json").read_text()))
    store = Store(d)
    sig = noise.pooled(store.ok_values_by_source(baselines_only=False), cfg.search.min_sigma).sigma
    a = Archive(store, cfg.search, basins().catalog, 0.0, cfg.integrity.reproduce_z, log=lambda *_: None)
    try:
        return look(a, sig, cfg, store)
    finally:
        store.close()


def snapshot(d) -> tuple:
    """Every island's programs and elites, the parents of the next requests, and the summary line."""
    def look(a, sig, cfg, store):
        n = int(store.get("requests", 0) or 0)
        parents = [(i, p.exp_id if p else None) for i, p, _ in (a.choose(k, f"{cfg.name}:{cfg.policy.seed}", sig)
                                                                for k in range(n, n + 4))]
        return a.snapshot(sig), parents, a.summary(sig)

    return read_archive(d, look)


def check_archive(d, every: int) -> None:
    """The archive of a finished run against its experiments: every program that trained `ok` is on its island,
    once; nothing else is, except migrations, made exactly once each."""
    db = sqlite3.connect(d / "ledger.sqlite")
    ok = {}
    for eid, norm, isl in db.execute("SELECT id, norm_sha, island FROM experiments WHERE kind!='baseline' AND "
                                     "status='ok' AND reused_from IS NULL ORDER BY id"):
        ok.setdefault((norm, isl), eid)
    rows = db.execute("SELECT norm_sha, island, exp_id, via FROM archive").fetchall()
    trained = {(n, i): e for n, i, e, via in rows if via == "trained"}
    assert trained == ok
    migrated = [r for r in rows if r[3] == "migrated"]
    number = json.loads(db.execute("SELECT value FROM meta WHERE key='migrations'").fetchone()[0])
    assert number == len(trained) // every
    events = [json.loads(r[0]) for r in db.execute("SELECT data FROM events WHERE kind='migration' ORDER BY id")]
    assert [e["number"] for e in events] == list(range(1, number + 1))
    assert sorted(m[2] for m in migrated) == sorted(exp for e in events for exp, _, _ in e["moved"])
    db.close()


def test_a_short_population_run_keeps_islands_elites_and_their_branches(tmp_path, shared_ray, monkeypatch):
    from arrl.launch import launch
    from arrl.policy.baselines import RandomCatalogPolicy

    seen = []  # the states the policy was asked to edit
    real = RandomCatalogPolicy.propose

    def propose(self, state, n=1, sampling=None):
        seen.append(state)
        return real(self, state, n, sampling)

    monkeypatch.setattr(RandomCatalogPolicy, "propose", propose)
    cfg = config_mod.from_dict({**POP, "name": "pop"})
    lines: list[str] = []
    reason, d = launch(cfg, runs=tmp_path / "runs", log=lines.append)
    assert reason.startswith("experiment budget reached"), lines[-5:]
    db = sqlite3.connect(d / "ledger.sqlite")
    db.row_factory = sqlite3.Row
    cands = db.execute("SELECT * FROM experiments WHERE kind='candidate'").fetchall()
    assert {r["island"] for r in cands} == {0, 1}
    start = db.execute("SELECT id FROM experiments WHERE kind='baseline' ORDER BY id").fetchone()[0]
    assert len({r["incumbent_id"] for r in cands}) > 2  # parents other than the start and the incumbent
    check_archive(d, POP["search"]["migrate_every"])
    snap, _, _ = snapshot(d)
    tgt = basins()
    for island, s in snap.items():
        for niche, eid in s["elites"]:
            if eid == start:
                continue
            row = db.execute("SELECT * FROM experiments WHERE id=?", (eid,)).fetchone()
            runs = db.execute("SELECT val_bpb FROM experiments WHERE norm_sha=? AND status='ok' AND kind!='baseline'"
                              " AND reused_from IS NULL", (row["norm_sha"],)).fetchall()
            assert len(runs) >= 2  # confirmed by a second run
            src = (d / "experiments" / f"{eid:06d}" / "train.py").read_text()
            assert list(niche) == [v // 2 for v in (tgt.catalog[0].values.index(re.search(r"^DEPTH = (\S+)", src,
                                                                                          re.M)[1]),
                                                    tgt.catalog[1].values.index(re.search(r"^WIDTH = (\S+)", src,
                                                                                          re.M)[1]))]
    # the policy saw the parents' programs and, once an island had other elites, them as inspirations: one line
    # each, the knobs where they differ from the parent, their value and runs
    shown = [x for st in seen for x in st.inspirations]
    assert shown and all(re.fullmatch(r"(\w+ = \S+(, )?)+ -> val_bpb 1\.\d{4} \(\d+ runs\)", x) for x in shown), shown
    assert len({st.source for st in seen}) > 2
    assert all(r["reward"] is not None for r in cands)  # each scored (against its parent: Archive.value_of)
    # `arrl status` shows the archive, island by island
    from arrl.report import status

    text, finished = status.status_text(d)
    assert finished and re.search(r"^archive: island 0: \d+ programs, \d+ elites, best exp \d+ at 1\.\d{4} "
                                  r"\(\d+ runs\); island 1: ", text, re.M), text
    # each island's branch ends at its best elite (the start program is the baseline commit)
    branches = subprocess.run(["git", "-C", str(d / "git"), "branch", "--format=%(refname:short)"],
                              capture_output=True, text=True, check=True).stdout.split()
    assert "arrl/pop" in branches
    bests = best_elites(d)
    assert any(b != start for b in bests.values())
    for island, best in bests.items():
        if best == start:
            continue
        log = subprocess.run(["git", "-C", str(d / "git"), "log", "--format=%s", f"arrl/pop-island-{island}"],
                             capture_output=True, text=True, check=True).stdout.splitlines()
        assert log[-1] == "baseline" and log[0].startswith(f"exp {best}: "), (island, best, log)


def best_elites(d) -> dict:
    return read_archive(d, lambda a, sig, cfg, _: {i: a.best(i, sig).exp_id for i in range(cfg.search.islands)})


def test_population_driver_killed_resumes_with_the_same_archive(tmp_path):
    env = dict(os.environ, ARRL_RUNS_DIR=str(tmp_path / "runs"), RAY_ADDRESS="")
    cfg = json.loads(json.dumps(POP))
    cfg["name"] = "pop-kill"
    cfg["oracle"]["max_experiments"] = 60
    f = tmp_path / "launch.toml"
    f.write_text(config_mod.to_toml(config_mod.from_dict(cfg)))
    proc = subprocess.Popen([sys.executable, "-m", "arrl", "launch", str(f)], env=env,
                            stdout=(tmp_path / "first.log").open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    d = tmp_path / "runs" / "pop-kill"
    # killed once the archive has programs on it and before the run ends, at a random moment
    kill_when(proc, d, "SELECT COUNT(*) FROM archive", 8, seed=3, spread_s=2.0)
    db = sqlite3.connect(d / "ledger.sqlite")
    status = db.execute("SELECT value FROM meta WHERE key='status'").fetchone()
    db.close()
    assert status is None or json.loads(status[0]) != "finished"  # it really was cut short
    before = snapshot(d)
    assert before[0][0]["programs"], "killed before the archive had programs"
    out = subprocess.run([sys.executable, "-m", "arrl", "launch", "--resume", "pop-kill"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    # the resumed driver's archive, read from the ledger as it started, is the one the dead driver left
    assert f"resume: archive {before[2]}" in out.stdout, (before[2], out.stdout[:3000])
    after = snapshot(d)
    for island, s in before[0].items():
        assert after[0][island]["programs"][:len(s["programs"])] == s["programs"]  # nothing lost or moved
    check_archive(d, POP["search"]["migrate_every"])
