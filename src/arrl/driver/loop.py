"""The driver (`arrl launch`): keep every worker busy, record everything, then count it.

One loop, top to bottom:
  1. restore: derive incumbent, noise and counters from the ledger; `running` rows of a dead
     driver go back to `pending` (they re-run); the git branch is reconciled with the ledger.
     With a local policy server, its first group of proposals is made (the prefill done) before
     anything trains, so no baseline shares its cores with the parts starting up.
  2. baselines: the incumbent is run `noise_runs` times with different seeds (noise estimate).
  3. fill: every idle worker gets the oldest pending experiment (confirmations, re-runs), else
     a new candidate made from the next prefetched proposal: edit -> static policy ->
     de-duplication -> experiment row -> worker. Proposals are fetched in the background in
     groups of `group_size` per incumbent state, so workers never wait for the policy.
  4. wait: `ray.wait` on the running experiments; each result is written to the ledger with
     its reward in one transaction before anything is derived from it. A run that got far less
     compute than it should (arrl.driver.contention) is re-run instead, and never scored.
     With placement `between_runs` (arrl.ops.placement) proposals and learner updates happen only
     while no experiment trains, and no experiment starts while they run.
  5. accept: a promising candidate is re-run with another seed; if both runs confirm it
     beats the incumbent by the noise margin, it becomes the incumbent and a commit on the
     run's git branch.
  6. the oracle decides when to stop; the reason is recorded.
Every incumbent's runs (the baselines, an accepted edit and its confirmations) are also
scored on the environment's sealed test split by the worker that holds their models, in a
separate evaluation (`test_scores`); nothing here reads those scores back.
"""

from __future__ import annotations

import ast
import hashlib
import json
import queue
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import ray

from arrl.driver import noise as acceptance
from arrl.driver import contention
from arrl.driver import guard as edit_policy
from arrl.driver import edits
from arrl.driver import integrity
from arrl.driver import oracle
from arrl.driver.branch import GitBranch
from arrl.config import Config
from arrl.ops.metrics import RunMetrics
from arrl.ops.placement import Placement
from arrl.policy.prompt import HistoryEntry, PolicyState
from arrl.driver.reward import reward as compute_reward
from arrl.ledger.store import Store
from arrl.target import Target
from arrl.worker.abort import reference_runs
from env import profiles

RUN_STATUSES_FAILED_EDIT = ("edit_failed", "rejected")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def normalize(source: str) -> str:
    """Source with comments and formatting removed (AST round trip), for de-duplication."""
    try:
        return ast.unparse(ast.parse(source))
    except (SyntaxError, ValueError, RecursionError):
        return source


@dataclass
class Incumbent:
    exp_id: int  # the experiment that made it (the first baseline for the start)
    source: str
    values: list  # val_bpb of its runs

    @property
    def bpb(self) -> float:
        """The robust centre of its runs (their median)."""
        return acceptance.centre(self.values)


INFRA_ATTEMPTS = 3  # runs of one experiment that may end in a sandbox error before it is recorded as a crash


class Driver:
    def __init__(self, cfg: Config, store: Store, target: Target, policy, workers: list, make_worker=None,
                 log=print, learning=None, placement: Placement | None = None, warm_up: bool = False):
        self.cfg, self.store, self.target, self.policy = cfg, store, target, policy
        self.workers = list(workers)  # Ray actor handles of ExperimentWorker
        self.make_worker = make_worker  # index -> new handle, to replace a dead worker
        self.log = log
        self.learning = learning  # arrl.driver.learning.Learning, or None for a frozen policy
        self.branch = GitBranch(store.root / "git", cfg.name)
        self.inflight: dict = {}  # ObjectRef -> (exp_id, worker index)
        self.busy: set[int] = set()
        self.proposals: queue.Queue = queue.Queue()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="arrl-propose")
        self.fetch: Future | None = None
        self.stop_reason: str | None = None
        self.t_session = time.time()
        self.metrics = RunMetrics(cfg.name)  # Ray metrics for the dashboard
        self._ref_cache: dict = {}  # incumbent id -> its learning curves (self-evaluation)
        self.floor = integrity.floor(cfg.integrity.floor_bpb, profiles.get(target.profile).bpb_floor)
        # between_runs: the policy server and the learner work on the workers' cores, so only while none trains
        self.between_runs = placement is not None and placement.between_runs
        self.policy_paused = False
        self.policy_pauses = int(store.get("policy_pauses", 0) or 0)  # training stretches with the server stopped
        self.warm_up = warm_up  # a local policy server makes its first proposals before anything trains
        self.tests: dict = {}  # exp id -> incumbent id: runs whose models wait for the test split's score
        self.test_inflight: dict = {}  # ObjectRef -> (exp id, incumbent id, worker index)
        self.warned: str | None = None

    # -- derived state (always recomputed from the ledger) ----------------------------------------
    def _restore(self) -> None:
        s = self.store
        requeued = s.requeue_running()
        if requeued:
            self.log(f"resume: re-running experiments {requeued} that were in flight")
            s.event("requeued", ids=requeued)
        self.wall_before = s.get("wall_s", 0.0)
        base = s.baselines(done=True)
        self.noise = self._estimate_noise()
        first_base = s.baselines()
        self.incumbent = Incumbent(first_base[0]["id"] if first_base else 0, self.target.source(),
                                   [r["val_bpb"] for r in base if r["status"] == "ok"])
        for a in s.accepted():
            row = s.experiment(a["exp_id"])
            src = (s.exp_dir(row["id"]) / "train.py").read_text()
            vals = self._accepted_values(row)
            self.incumbent = Incumbent(row["id"], src, vals)
            if not a["commit_sha"]:
                self._commit(row, a["val_bpb"])
            self._queue_tests(row["id"], self._accepted_ids(row))
        self.branch.ensure(self.target.source())

    def _accepted_ids(self, row) -> list:
        """The runs an accepted candidate was accepted on: the ones its `accepted_runs` event names (re-run
        repeats, `[search] rerun_repeats`), else the candidate and its confirmations."""
        runs = self.store.accepted_runs(row["id"])
        if runs is not None:
            return runs
        return [row["id"]] + [c["id"] for c in self.store.confirmations(row["id"], done=True)]

    def _accepted_values(self, row) -> list:
        """The val_bpb of the runs an accepted candidate was accepted on (`_accepted_ids`)."""
        return [self.store.experiment(i)["val_bpb"] for i in self._accepted_ids(row)]

    def _runs_of(self, norm: str) -> list:
        """Every finished run of one normalised source that trained (candidates and confirmations, not the
        baselines nor results answered from the ledger), oldest first."""
        return self.store.trained_runs_of(norm)

    def _rerun(self, norm: str, eid: int) -> list | None:
        """With `[search] rerun_repeats` = K: the runs of a repeated source that earn it another run (another
        seed) instead of an answer from the ledger: all `ok`, fewer than K, none in flight, and their mean
        beats the incumbent without having been accepted (a repeat of the incumbent itself is not re-run).
        None when it is answered from the ledger."""
        k = self.cfg.search.rerun_repeats
        if not k or not self._baselines_done() or not self.incumbent.values:
            return None
        if self.store.source_in_flight(norm, eid):
            return None
        runs = self._runs_of(norm)
        if not runs or len(runs) >= k or any(r["status"] != "ok" for r in runs):
            return None
        if acceptance.centre(r["val_bpb"] for r in runs) >= self.incumbent.bpb:
            return None
        return runs

    def _counted(self) -> tuple[int, int]:
        """(experiments run, experiments since the last acceptance): candidates and confirmations that ran. By
        default only runs that trained count, and duplicates answered from the ledger count toward
        `max_failed_edits` instead; with `[oracle] count_duplicates` they count as experiments too."""
        last = self.incumbent.exp_id if self.store.accepted() else 0
        return self.store.counted_runs(last, self.cfg.oracle.count_duplicates)

    def _history(self) -> tuple[HistoryEntry, ...]:
        rows = self.store.recent_candidates(self.cfg.search.history_k)
        return tuple(HistoryEntry(r["summary"] or "", r["status"], r["val_bpb"], r["reward"],
                                  r["message"] if r["status"] != "ok" else "") for r in rows)

    def state(self) -> PolicyState:
        best = ""
        acc = self.store.accepted()
        if acc:
            row = self.store.experiment(acc[-1]["exp_id"])
            best = f"{row['summary']} -> val_bpb {acc[-1]['val_bpb']:.4f} (from {acc[0]['prev_bpb']:.4f} at start)"
        last = self.store.last_failed_candidate_id()
        diag = ""
        if last is not None:
            out = self.store.exp_dir(last) / "log_tail.txt"
            diag = out.read_text(errors="replace") if out.exists() else ""
        return PolicyState(target=self.target.name, program=self.target.program_md.read_text(),
                           source=self.incumbent.source, fmt=self.cfg.policy.fmt,
                           incumbent_bpb=self.incumbent.bpb if self.incumbent.values else None,
                           catalog=self.target.catalog, editable=self.target.editable, history=self._history(),
                           prompt_code=self.target.prompt_code,
                           best=best, diagnostics=diag)

    # -- proposals ------------------------------------------------------------------------------
    def _prefetch(self, start: bool = True) -> None:
        """Collect a finished fetch of proposals; with `start`, ask for the next group when the queue runs low."""
        if self.fetch is not None:
            if not self.fetch.done():
                return
            try:
                props, seconds = self.fetch.result()
                self.metrics.proposals(len(props), seconds)
                for p in props:
                    self.proposals.put((p, self.incumbent.exp_id))
            except Exception as e:  # noqa: BLE001 - a policy failure is recorded and retried
                self.store.event("policy_error", error=str(e)[:500])
                self.log(f"policy error (retrying): {e}")
                time.sleep(1.0)
            self.fetch = None
        if start and self.proposals.qsize() < len(self.workers):
            st = self.state()
            self.fetch = self.pool.submit(self._propose, st, self.cfg.policy.group_size)

    def _propose(self, st, n: int) -> tuple[list, float]:
        t0 = time.monotonic()
        props = self.policy.propose(st, n)
        return props, time.monotonic() - t0

    def _candidate(self) -> int | None:
        """Turn the next proposal into an experiment row; None when no proposal is ready."""
        try:
            prop, base_id = self.proposals.get_nowait()
        except queue.Empty:
            return None
        if base_id != self.incumbent.exp_id:
            self.store.event("stale_proposal", proposal=prop.id)  # made for an older incumbent
            return -1
        if self.learning is not None and prop.adapter_version < self.learning.served:
            # made by an adapter the server no longer serves: the new one proposes instead (at the default's
            # one update per run, queued proposals of the old one used to fill every slot left after the load)
            self.store.event("stale_proposal", proposal=prop.id, adapter_version=prop.adapter_version,
                             served=self.learning.served)
            return -1
        inc = self.incumbent
        res = edits.apply(inc.source, prop.text, prop.fmt, self.target.catalog, self.target.editable)
        summary = _summary(prop.text, res)
        with self.store.tx():
            self.store.add_proposal(prop.to_dict())
            if not res.ok:
                eid = self.store.add_experiment("candidate", 0, sha(prop.text), "", prop.id, None, inc.exp_id,
                                                summary)
                r = compute_reward("edit_failed", None, inc.bpb, self.noise.sigma, self.cfg.reward)
                self.store.finish(eid, status="edit_failed", message=f"{res.failure}: {res.message}", reward=r)
                self.log(f"exp {eid:>4} candidate edit_failed    {res.failure}: {res.message}"[:160])
                return -1
            verdict = edit_policy.check(inc.source, res.source, self.target.allow)
            norm = sha(normalize(res.source))
            eid = self.store.add_experiment("candidate", self._seed(), sha(res.source), norm, prop.id, None,
                                            inc.exp_id, summary, res.diff)
            if not verdict.ok:
                r = compute_reward("rejected", None, inc.bpb, self.noise.sigma, self.cfg.reward)
                self.store.finish(eid, status="rejected", message=verdict.reason[:500], reward=r)
                self.log(f"exp {eid:>4} candidate rejected       {verdict.reason}"[:160])
                return -1
            dup = self.store.done_with_norm(norm)
            prior = self._rerun(norm, eid) if dup is not None else None
            if prior:
                self.store.event("rerun", exp=eid, of=[r["id"] for r in prior])
                self.log(f"exp {eid:>4} candidate repeats exps {[r['id'] for r in prior]} (median val_bpb "
                         f"{acceptance.centre(r['val_bpb'] for r in prior):.4f}, not accepted): re-running it")
            elif dup is not None:
                r = compute_reward(dup["status"], dup["val_bpb"], inc.bpb, self.noise.sigma, self.cfg.reward,
                                   res.lines_added) if self._baselines_done() and inc.values else None
                self.store.finish(eid, status=dup["status"], val_bpb=dup["val_bpb"], message=dup["message"],
                                  reused_from=dup["id"], reward=r)
                self.store.event("deduplicated", exp=eid, of=dup["id"])
                self.log(f"exp {eid:>4} candidate {dup['status']:<14} (same source as exp {dup['id']}, not re-run)")
                return -1
            self.store.write_source(eid, res.source, res.diff)
        return eid

    def _seed(self) -> int:
        return 1000 + self.store.experiment_count()

    # -- scheduling ------------------------------------------------------------------------------
    def _submit(self, exp_id: int, w: int) -> None:
        row = self.store.experiment(exp_id)
        src = (self.store.exp_dir(exp_id) / "train.py").read_text()
        self.store.mark_running(exp_id, f"worker-{w}")
        # the task's name is what the dashboard shows for the worker's live state (Ray keeps an
        # actor's repr from when it started)
        ref = self.workers[w].run.options(name=f"exp {exp_id} {row['kind']}: {(row['summary'] or '')[:60]}").remote(
            exp_id, src, row["seed"], self._abort_rule(row))
        self.inflight[ref] = (exp_id, w)
        self.busy.add(w)

    def _abort_rule(self, row) -> dict | None:
        """Self-evaluation for a candidate: keep up with the incumbent's curves, or be stopped early."""
        s = self.cfg.search
        if not s.early_abort or row["kind"] != "candidate":
            return None
        inc = row["incumbent_id"]
        if inc not in self._ref_cache:
            runs = reference_runs(self.store.root, self.store.incumbent_run_ids(inc))
            if not runs:
                return None
            self._ref_cache[inc] = runs
        return {"reference": self._ref_cache[inc], "z": s.abort_z, "margin": s.abort_margin, "every": s.abort_every,
                "min_frac": s.abort_min_frac}

    def _budget_left(self) -> bool:
        cap = self.cfg.oracle.max_experiments
        if not cap:
            return True
        return self.store.started_runs(self.cfg.oracle.count_duplicates) < cap

    def _parts_busy(self) -> bool:
        """Whether the policy server or the learner is working (placement between_runs: nothing may train)."""
        fetching = self.fetch is not None and not self.fetch.done()
        return fetching or (self.learning is not None and self.learning.busy())

    def _pause_policy(self) -> None:
        """between_runs: while a run trains and the policy server has nothing to do, its processes are stopped
        (the next request continues them), so their idle wake-ups do not land on the run's cores."""
        if self._idle() or self._parts_busy():
            self.policy_paused = False
        elif not self.policy_paused:
            self.policy_paused = self.policy.pause()
            if self.policy_paused:
                self.policy_pauses += 1
                with self.store.tx():
                    self.store.put("policy_pauses", self.policy_pauses)

    def _idle(self) -> bool:
        return not self.inflight and not self.test_inflight

    def _fill(self) -> None:
        if self.between_runs and self._parts_busy():
            return
        for w in range(len(self.workers)):  # test-split evaluations first: each needs one particular worker
            if w not in self.busy:
                self._submit_test(w)
        for w in range(len(self.workers)):
            if w in self.busy:
                continue
            running = {e for e, _ in self.inflight.values()}
            pending = [i for i in self.store.pending_ids(len(running) + 1) if i not in running]
            if pending:
                self._submit(pending[0], w)
                continue
            while True:
                # checked before every proposal: a duplicate answered from the ledger uses up the budget too
                if self.stop_reason or not self._budget_left():
                    return
                eid = self._candidate()
                if eid is None:
                    return
                if eid > 0:
                    self._submit(eid, w)
                    break

    # -- the sealed test split -----------------------------------------------------------------
    def _queue_tests(self, inc_id: int, run_ids: list) -> None:
        """Score these runs of incumbent `inc_id` on the test split (each once, by the worker holding its model)."""
        done = self.store.test_scored()
        for i in run_ids:
            if i not in done and i not in {e for e, _, _ in self.test_inflight.values()}:
                self.tests.setdefault(i, inc_id)

    def _submit_test(self, w: int) -> bool:
        """Give idle worker `w` a test-split evaluation of a model it holds; True if it got one."""
        for exp_id, inc_id in list(self.tests.items()):
            ran_on = self.store.experiment(exp_id)["worker"] or ""
            idx = int(ran_on.split("-")[-1]) if ran_on.startswith("worker-") else -1
            if not 0 <= idx < len(self.workers):
                self.tests.pop(exp_id)
                with self.store.tx():
                    self.store.add_test_score(exp_id, inc_id, "missing", None, f"no worker holds its model ({ran_on})")
                continue
            if idx != w:
                continue
            self.tests.pop(exp_id)
            ref = self.workers[w].score_test.options(name=f"test split: exp {exp_id}").remote(exp_id)
            self.test_inflight[ref] = (exp_id, inc_id, w)
            self.busy.add(w)
            return True
        return False

    def _handle_test(self, ref) -> None:
        exp_id, inc_id, w = self.test_inflight.pop(ref)
        self.busy.discard(w)
        try:
            r = ray.get(ref)
        except ray.exceptions.RayError as e:
            r = {"status": "missing", "test_bpb": None, "message": f"worker-{w}: {str(e)[:300]}"}
        with self.store.tx():
            self.store.add_test_score(exp_id, inc_id, r["status"], r.get("test_bpb"), r.get("message") or "")
        val = self.store.experiment(exp_id)["val_bpb"]
        score = "-" if r.get("test_bpb") is None else f"{r['test_bpb']:.4f}"
        self.log(f"exp {exp_id:>4} test split   {r['status']:<14} test_bpb {score} (val_bpb "
                 f"{'-' if val is None else format(val, '.4f')}; incumbent exp {inc_id})")

    def _baselines_done(self) -> bool:
        n = self.cfg.search.noise_runs or 1
        return len(self.store.baselines(done=True)) >= n

    def _schedule_baselines(self) -> None:
        n = self.cfg.search.noise_runs or 1
        have = self.store.baselines()
        src = self.target.source()
        for i in range(len(have), n):
            with self.store.tx():
                eid = self.store.add_experiment("baseline", i, sha(src), sha(normalize(src)), summary="baseline")
                self.store.write_source(eid, src)

    # -- results -----------------------------------------------------------------------------
    def _handle(self, ref) -> None:
        exp_id, w = self.inflight.pop(ref)
        self.busy.discard(w)
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as e:
            self.log(f"worker-{w} died during experiment {exp_id}; re-running it on another worker")
            with self.store.tx():
                self.store.requeue(exp_id)
                self.store.event("worker_died", worker=w, exp=exp_id, error=str(e)[:300])
            if self.make_worker is not None:
                self.workers[w] = self.make_worker(w)
            return
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            attempts = self.store.experiment(exp_id)["attempts"]
            if type(cause).__name__ == "DockerUnavailable" and attempts < INFRA_ATTEMPTS:
                # the sandbox's machinery failed (engine, image, container start), not the edit: run it again
                # rather than teach the policy that its edit crashed
                self.log(f"worker-{w}: sandbox error on experiment {exp_id} (attempt {attempts}); re-running it: "
                         f"{str(cause)[:200]}")
                with self.store.tx():
                    self.store.requeue(exp_id)
                    self.store.event("sandbox_error", worker=w, exp=exp_id, error=str(cause)[:300])
                time.sleep(1.0)
                return
            result = {"outcome": {"status": "crash", "message": f"worker error: {str(e)[:300]}", "val_bpb": None,
                                  "timings": {}, "log_tail": ""}, "worker": f"worker-{w}"}
        self._record(exp_id, result)

    def _rule(self) -> contention.Rule:
        c = self.cfg.contention
        return contention.Rule(c.max_foreign_share, c.min_ratio)

    def _contended(self, row, o: dict) -> str | None:
        """Why this run got far less compute than it should have (arrl.driver.contention), or None."""
        c = self.cfg.contention
        if not c.check or o["status"] not in ("ok", "aborted", "timeout"):
            return None
        same = [contention.Throughput(r["steps"], r["tokens"], r["train_s"], None)
                for r in self.store.ok_throughputs_of(row["norm_sha"], row["id"])]
        t = _throughput(o)
        if not o.get("cores"):  # not pinned (placement off): its cores are shared by design, not by accident
            t = contention.Throughput(t.steps, t.tokens, t.train_s, None)
        return contention.verdict(t, same, self._rule())

    def _rerun_contended(self, row, o: dict, why: str, done: bool = False) -> bool:
        """Send a contended run back to pending (its outcome kept in a `contended` event and file); False once
        it has had its `[contention] reruns`."""
        if row["attempts"] > self.cfg.contention.reruns:
            return False
        d = self.store.exp_dir(row["id"])
        (d / f"outcome-contended-{row['attempts']}.json").write_text(_json(o))
        t = _throughput(o)
        with self.store.tx():
            again = self.store.redo(row["id"]) if done else self.store.requeue(row["id"])
            if again:
                self.store.event("contended", exp=row["id"], attempt=row["attempts"], reason=why[:300],
                                 foreign_share=t.foreign_share, tokens_per_s=t.rate, steps=t.steps,
                                 val_bpb=o.get("val_bpb"))
        if again:
            self.log(f"exp {row['id']:>4} {row['kind']:<9} contended: {why}; re-running it (attempt "
                     f"{row['attempts']} of {self.cfg.contention.reruns + 1})"[:220])
        return again

    def _record(self, exp_id: int, result: dict) -> None:
        o = result["outcome"]
        row = self.store.experiment(exp_id)
        d = self.store.exp_dir(exp_id)
        (d / "log_tail.txt").write_text(o.get("log_tail") or "")
        (d / "curve.json").write_text(_json(o.get("curve") or []))
        (d / "outcome.json").write_text(_json(o))
        status, r, message = o["status"], None, o.get("message") or ""
        why_contended = self._contended(row, o)
        if why_contended and self._rerun_contended(row, o, why_contended):
            return
        if why_contended:  # contended again after every re-run: recorded, never scored
            status, message = "contended", f"{why_contended} (after {row['attempts']} runs)"
        elif row["kind"] != "baseline":
            status, r, why = self._score(row, status, o.get("val_bpb"))
            message = why or message
        t = o.get("timings") or {}
        tp = _throughput(o)
        with self.store.tx():
            fresh = self.store.finish(exp_id, status=status, val_bpb=None if why_contended else o.get("val_bpb"),
                                      train_s=t.get("train_s"), wall_s=t.get("wall_s"),
                                      peak_rss_mb=o.get("peak_rss_mb"), message=message[:1000],
                                      reward=r, outcome={k: v for k, v in o.items() if k not in ("log_tail",)},
                                      steps=o.get("steps"), tokens=o.get("tokens"), tokens_per_s=tp.rate if
                                      o.get("tokens") is not None else None, cpu_s=o.get("cpu_s"),
                                      cpu_share=o.get("cpu_share"), cores=o.get("cores") or "",
                                      foreign_share=o.get("foreign_share"))
            self.store.put("wall_s", self.wall_before + time.time() - self.t_session)
        if not fresh:
            return
        self.log(f"exp {exp_id:>4} {row['kind']:<9} {status:<14} val_bpb "
                 f"{'-' if o.get('val_bpb') is None else format(o['val_bpb'], '.4f')}"
                 f"{'' if r is None else f'  reward {r:+.2f}'}  {row['summary'] or ''}"[:160])
        if status == "contended" and row["kind"] != "baseline":
            return
        if row["kind"] == "baseline":
            self._restore_baseline()
        elif status == "suspicious":
            self.log(f"exp {exp_id:>4} is suspicious ({message}); re-running it in a fresh sandbox")
            self.store.event("suspicious", exp=exp_id, reason=message[:300])
            self._schedule_confirm(self.store.experiment(exp_id))
        elif row["kind"] == "candidate" and r is not None:
            self._update_noise()  # a re-run repeat is a source's second run
            self._maybe_confirm(row, o)
        elif row["kind"] == "confirm":
            self._update_noise()
            self._maybe_accept(row)

    def _score(self, row, status: str, val_bpb, judge: bool = True) -> tuple[str, float | None, str | None]:
        """(status, reward, message) of a finished candidate or confirmation: no reward before the baselines
        are done; with `judge`, an implausible candidate is `suspicious`, unrewarded until a fresh run
        reproduces it."""
        inc_bpb = self._incumbent_value(row["incumbent_id"])
        if inc_bpb is None or not self._baselines_done():
            return status, None, None
        if judge and row["kind"] == "candidate" and status == "ok":
            g = self.cfg.integrity
            why = integrity.implausible(val_bpb, inc_bpb, self.noise.sigma, self.floor, g.max_gain_z,
                                        g.max_gain_frac)
            if why:
                return "suspicious", None, f"{why}; not rewarded until a fresh run reproduces it"
        added = edits.diff_size(row["diff"] or "")[0]
        return status, compute_reward(status, val_bpb, inc_bpb, self.noise.sigma, self.cfg.reward, added), None

    def _incumbent_value(self, inc_id) -> float | None:
        if inc_id is None:
            return None
        if inc_id == self.incumbent.exp_id and self.incumbent.values:
            return self.incumbent.bpb
        acc = self.store.accepted_value(inc_id)
        if acc is not None:
            return acc
        base = [r["val_bpb"] for r in self.store.baselines(done=True, ok=True)]
        return acceptance.centre(base) if base else None

    def _restore_baseline(self) -> None:
        base = self.store.baselines(done=True)
        if self._baselines_done() and self._recheck_baselines(base):
            return  # a baseline runs again; the noise waits for it
        vals = [r["val_bpb"] for r in base if r["status"] == "ok"]
        self.noise = self._estimate_noise()
        first = self.store.baselines()[0]["id"]  # not the first *done*: they finish in any order
        if not self.store.accepted():
            self.incumbent.values = vals
            self.incumbent.exp_id = first
        if self._baselines_done():
            if not vals:
                self.stop_reason = "the baseline failed every run; see experiments/*/log_tail.txt"
            else:
                self._put_noise()
                base_bpb = acceptance.centre(vals)
                inc = "" if self.incumbent.exp_id == first else \
                    f"; incumbent exp {self.incumbent.exp_id} at {self.incumbent.bpb:.4f}"
                self.log(f"baseline val_bpb {base_bpb:.4f} (median of {len(vals)}), noise sigma {self.noise.sigma:.4f}"
                         f" (robust; raw {self.noise.raw:.4f} over {self.noise.runs} runs, {self.noise.dof} dof){inc}")
                self._queue_tests(first, [r["id"] for r in base if r["status"] == "ok"])
                self._rederive()

    def _recheck_baselines(self, base) -> bool:
        """Once every baseline is in: a baseline whose throughput is far below the other baselines' median
        (the first one had nothing to compare with when it finished) runs again; True if one does."""
        c = self.cfg.contention
        if not c.check:
            return False
        ok = [r for r in base if r["status"] == "ok"]
        again = False
        for r in ok:
            others = [contention.Throughput(x["steps"], x["tokens"], x["train_s"], None) for x in ok if x["id"] != r["id"]]
            why = contention.verdict(contention.Throughput(r["steps"], r["tokens"], r["train_s"], None), others,
                                     self._rule())
            if why:
                o = json.loads(r["outcome"]) if r["outcome"] else {"status": r["status"], "val_bpb": r["val_bpb"]}
                again |= self._rerun_contended(r, o, why, done=True)
        return again

    def _estimate_noise(self, pool: bool | None = None) -> acceptance.Noise:
        """The noise sigma from the ledger's done runs: the baselines, and with `pool` (default `[search]
        pool_noise`) every source that ran `ok` more than once (a candidate with its confirmation, a re-run
        repeat), pooled. A result answered from the ledger is not a run; a suspicious one that did not
        reproduce is not `ok`."""
        pool = self.cfg.search.pool_noise if pool is None else pool
        return acceptance.pooled(self.store.ok_values_by_source(baselines_only=not pool), self.cfg.search.min_sigma)

    def _put_noise(self) -> None:
        n = self.noise
        base = self._estimate_noise(pool=False) if self.cfg.search.pool_noise else None
        warn = acceptance.warning(n, self.target.sigma_max_bpb, base)
        self.store.put("noise", {"sigma": n.sigma, "raw": n.raw, "runs": n.runs, "dof": n.dof, "estimator": "robust",
                                 "warning": warn})
        if warn != self.warned:
            self.warned = warn
            if warn:
                self.log(f"warning: {warn}")

    def _update_noise(self) -> None:
        """Re-estimate the noise after a run (pooled: a source's second run adds to it); record it when any of
        its figures changed (a source's first run adds to `runs` alone), log it when the sigma moved."""
        if not self._baselines_done():
            return
        before, self.noise = self.noise, self._estimate_noise()
        if self.noise != before:
            self._put_noise()
        if self.noise.sigma != before.sigma:
            self.log(f"noise sigma {before.sigma:.4f} -> {self.noise.sigma:.4f} (pooled over {self.noise.runs} "
                     f"runs, {self.noise.dof} dof)")

    def _rederive(self) -> None:
        """Finish what results imply but a dead driver may not have done: score candidates that
        finished before the baselines, confirm promising ones, accept confirmed ones (all idempotent)."""
        for row in self.store.unscored_candidates():
            # a duplicate answered before the baselines were done is paid what it repeats, not judged again
            status, r, why = self._score(row, row["status"], row["val_bpb"], judge=row["reused_from"] is None)
            if status == "suspicious":
                self.store.event("suspicious", exp=row["id"], reason=why[:300])
            with self.store.tx():
                self.store.rescore(row["id"], status, r, why)
        for row in self.store.unresolved_suspicious():
            conf = self.store.confirmations(row["id"])
            if not conf:
                self._schedule_confirm(row)
            elif conf[0]["state"] == "done":
                self._resolve(row, conf[0])
        for row in self.store.ok_candidates_for(self.incumbent.exp_id):
            self._maybe_confirm(row, {"status": "ok", "val_bpb": row["val_bpb"]})
        for row in self.store.confirmations(done=True):
            cand = self.store.experiment(row["parent"])
            if cand["incumbent_id"] == self.incumbent.exp_id and not self.store.is_accepted(cand["id"]):
                self._maybe_accept(row)

    def _maybe_confirm(self, row, o: dict) -> None:
        if row["incumbent_id"] != self.incumbent.exp_id or o["status"] != "ok":
            return
        n_inc = len(self.incumbent.values)
        runs = self._runs_of(row["norm_sha"]) if self.cfg.search.rerun_repeats else []
        if len(runs) >= 2:  # a re-run repeat: its runs together are the evidence, with no extra confirmation
            self._judge(row, runs)
            return
        if not acceptance.promising(o.get("val_bpb"), self.incumbent.bpb, self.noise, self.cfg.search.margin_z,
                                    n_inc):
            return
        if not self.cfg.search.confirm:
            self._accept(row, [o["val_bpb"]])
            return
        self._schedule_confirm(row)

    def _schedule_confirm(self, row) -> None:
        """Re-run a candidate with another seed in a fresh sandbox (once)."""
        if self.store.confirmations(row["id"]):
            return  # already scheduled (a resumed driver re-deriving)
        src = (self.store.exp_dir(row["id"]) / "train.py").read_text()
        with self.store.tx():
            eid = self.store.add_experiment("confirm", row["seed"] + 7919, row["source_sha"], row["norm_sha"],
                                            row["proposal_id"], row["id"], row["incumbent_id"], row["summary"],
                                            row["diff"])
            self.store.write_source(eid, src)

    def _maybe_accept(self, confirm_row) -> None:
        cand = self.store.experiment(confirm_row["parent"])
        conf = self.store.experiment(confirm_row["id"])
        if cand["status"] == "suspicious":
            if cand["reward"] is not None or not self._resolve(cand, conf):
                return
            cand = self.store.experiment(cand["id"])
            if not acceptance.promising(cand["val_bpb"], self.incumbent.bpb, self.noise, self.cfg.search.margin_z,
                                        len(self.incumbent.values)):
                return
        if cand["incumbent_id"] != self.incumbent.exp_id:
            self.store.event("stale_confirmation", exp=cand["id"])
            return
        # with re-run repeats every run of the source is evidence, else the candidate and this confirmation
        self._judge(cand, self._runs_of(cand["norm_sha"]) if self.cfg.search.rerun_repeats else [cand, conf])

    def _judge(self, cand, runs: list) -> None:
        """Accept `cand` on the mean of `runs` (every run of its source) when all are `ok`, none is below the
        floor, and the mean beats the incumbent by the margin for that many runs."""
        vals = [r["val_bpb"] for r in runs]
        if runs and all(r["status"] == "ok" for r in runs) and min(vals) >= self.floor and acceptance.confirmed(
                vals, self.incumbent.bpb, self.noise, self.cfg.search.margin_z, len(self.incumbent.values)):
            self._accept(cand, vals, [r["id"] for r in runs])

    def _resolve(self, cand, conf) -> bool:
        """A suspicious candidate's confirmation is in: reproduced -> `ok` with its reward; else it keeps
        status `suspicious` with the `[reward] suspicious` penalty. Returns whether it was reproduced."""
        second = conf["val_bpb"] if conf["status"] == "ok" else None
        ok = integrity.reproduced(cand["val_bpb"], second, self.noise.sigma, self.floor,
                                  self.cfg.integrity.reproduce_z)
        measured = f"exp {conf['id']} measured {conf['status']}" + (
            "" if second is None else f" val_bpb {second:.4f}")
        if ok:
            status, r, _ = self._score(cand, "ok", cand["val_bpb"], judge=False)
            message = f"reproduced: {measured}"
        else:
            r = self.cfg.reward.suspicious
            status, message = "suspicious", f"{cand['message'] or ''}; not reproduced: {measured}"
        with self.store.tx():
            self.store.resolve_suspicious(cand["id"], status, r, message[:1000])
            self.store.event("reproduced" if ok else "not_reproduced", exp=cand["id"], confirm=conf["id"])
        self.log(f"exp {cand['id']:>4} {'reproduced' if ok else 'NOT reproduced'} by exp {conf['id']}: "
                 f"reward {r:+.2f}")
        return ok

    def _accept(self, cand, vals: list, run_ids: list | None = None) -> None:
        value = acceptance.centre(vals)
        prev = self.incumbent.bpb
        with self.store.tx():
            self.store.accept(cand["id"], value, prev)
            if run_ids is not None:
                self.store.event("accepted_runs", exp=cand["id"], runs=run_ids)
        src = (self.store.exp_dir(cand["id"]) / "train.py").read_text()
        self.incumbent = Incumbent(cand["id"], src, list(vals))
        self._commit(cand, value)
        self.log(f"accepted exp {cand['id']}: val_bpb {prev:.4f} -> {value:.4f}  {cand['summary']}")
        self._queue_tests(cand["id"], run_ids or [cand["id"]])
        # proposals made for the old incumbent are stale now
        while not self.proposals.empty():
            self.proposals.get_nowait()

    def _commit(self, cand, value: float) -> None:
        src = (self.store.exp_dir(cand["id"]) / "train.py").read_text()
        sha_ = self.branch.commit_once(cand["id"], src, f"exp {cand['id']}: val_bpb {value:.6f} | "
                                       f"{cand['summary'] or ''}", cand["diff"] or "")
        with self.store.tx():
            self.store.set_commit(cand["id"], sha_)

    # -- the loop ------------------------------------------------------------------------------
    def progress(self) -> oracle.Progress:
        n, since = self._counted()
        gpu_s = self.store.busy_seconds()
        failed = self.store.candidates_since_last_run(self.cfg.oracle.count_duplicates)
        return oracle.Progress(experiments=n, since_accept=since, failed_edits_in_a_row=failed,
                               wall_s=self.wall_before + time.time() - self.t_session,
                               gpu_hours=gpu_s / 3600 * max(self.cfg.workers.gpus_per_worker, 1.0),
                               incumbent_bpb=self.incumbent.bpb if self.incumbent.values else None,
                               stop_requested=(self.store.root / "STOP").exists())

    def _warm(self) -> None:
        """Make the policy server's first group of proposals (its first prefill) before anything trains."""
        t0 = time.monotonic()
        self._prefetch()
        while self.fetch is not None and not self.fetch.done():
            time.sleep(0.1)
        n = self.proposals.qsize()
        self._prefetch(start=False)
        made, took = self.proposals.qsize() - n, time.monotonic() - t0
        with self.store.tx():
            self.store.event("policy_warm", proposals=made, seconds=round(took, 2))
        self.log(f"policy warm: {made} proposals in {took:.1f} s; experiments start now")

    def _finish_learning(self) -> None:
        """At the stop: an update already in flight is finished and served (unless `arrl stop` asked to stop
        now); none starts. Samples that wait stay unconsumed in the ledger, and the next update trains them
        (`arrl launch --resume` with a larger budget)."""
        lrn = self.learning
        if lrn.busy() and "stop requested" not in self.stop_reason:
            self.log(f"learner: the update in flight is finished before the run stops (adapter v{lrn.version + 1}; "
                     f"`arrl stop` skips it)")
            lrn.drain()
        waiting = lrn.waiting()
        if waiting:
            self.log(f"learner: {waiting} sample(s) wait for the next update (`arrl launch --resume` trains them)")

    def _best(self) -> float | None:
        return self.incumbent.bpb if self.incumbent.values else None

    def run(self) -> str:
        self._restore()
        self._schedule_baselines()
        if not self.store.accepted():  # candidates may start while the baselines run
            self.incumbent.exp_id = self.store.baselines()[0]["id"]
        if self._baselines_done():
            self._restore_baseline()
        self.store.put("status", "running")
        if self.warm_up:
            self._warm()
        stopping = False
        while True:
            if self.stop_reason is None and self._baselines_done():
                self.stop_reason = oracle.check(self.progress(), self.cfg.oracle)
            if self.stop_reason and not stopping:
                stopping = True  # from here no proposal is asked for and no learner update starts
                with self.store.tx():
                    self.store.event("stopping", reason=self.stop_reason, running=len(self.inflight))
            if self.stop_reason and self._idle():
                pending = self.store.pending_ids()
                if "stop requested" in self.stop_reason or ((not pending or not self._baselines_done())
                                                            and not self.tests):
                    break
            # between_runs: the policy server's and the learner's work starts only while nothing trains
            may_start = self._idle() or not self.between_runs
            if self.learning is not None:  # no update starts once the run is stopping
                self.learning.step(start=may_start and not self.stop_reason)
            if not self.stop_reason and not (self.learning is not None and self.learning.holding()):
                self._prefetch(start=may_start and not (self.between_runs and self._parts_busy()))
            self._fill()
            if self.between_runs:
                self._pause_policy()
            self.metrics.publish(self.store.gauges(), self._best())
            if self._idle():
                if self.stop_reason:
                    time.sleep(0.05)
                    continue
                time.sleep(0.2)
                continue
            extra = self.learning.refs() if self.learning is not None else []
            ready, _ = ray.wait(list(self.inflight) + list(self.test_inflight) + extra, num_returns=1, timeout=1.0)
            for ref in ready:
                if ref in self.inflight:
                    self._handle(ref)
                elif ref in self.test_inflight:
                    self._handle_test(ref)
        if self.learning is not None:
            self._finish_learning()
        with self.store.tx():
            self.store.put("status", "finished")
            self.store.put("stop_reason", self.stop_reason)
            self.store.put("wall_s", self.wall_before + time.time() - self.t_session)
            self.store.event("stopped", reason=self.stop_reason)
        self.metrics.publish(self.store.gauges(), self._best(), force=True)
        self.pool.shutdown(wait=False, cancel_futures=True)
        return self.stop_reason


def _throughput(o: dict) -> contention.Throughput:
    t = o.get("timings") or {}
    return contention.Throughput(o.get("steps"), o.get("tokens"), t.get("train_s"), o.get("foreign_share"))


def _summary(text: str, res) -> str:
    """One line saying what an edit does, for history and commit messages."""
    t = text.strip()
    if t.startswith("{"):
        return " ".join(t.split())[:120]
    if res.ok:
        added = [ln[1:].strip() for ln in res.diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
        return ("; ".join(a for a in added if a)[:120]) or "deletes lines"
    return " ".join(t.split())[:120]


def _json(obj) -> str:
    import json

    return json.dumps(obj, indent=1, default=str)
