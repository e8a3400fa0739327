"""The driver (`arrl launch`): keep every worker busy, record everything, then count it.

`Driver.run` reads top to bottom; each step lives in the module named after it:
  1. restore (here): derive the incumbent, the noise and the counters from the ledger; `running`
     rows of a dead driver go back to `pending` (they re-run); the git branch is reconciled with
     the ledger. With a local policy server, its first group of proposals is made (the prefill
     done) before anything trains, so no baseline shares its cores with the parts starting up.
  2. baselines (here): the incumbent runs `noise_runs` times with different seeds.
  3. propose and apply (candidates.py): every idle worker gets the oldest pending experiment
     (confirmations, re-runs), else a new candidate made from the next prefetched proposal: edit
     -> static guard -> de-duplication -> experiment row with its script -> worker. Proposals are
     fetched in the background in groups of `group_size` per incumbent state. With `[search]
     strategy = "population"` each group edits a parent drawn from the archive (archive.py), with
     other elites shown as inspirations, instead of the incumbent.
  4. run and record (results.py): `ray.wait` on the running experiments; each result is written to
     the ledger with its reward in one transaction before anything is derived from it. A run that
     got far less compute than it should (contention.py) runs again instead, and is never scored.
     With placement `between_runs` (arrl.ops.placement) proposals and learner updates happen only
     while no experiment trains, and no experiment starts while they run.
  5. score and accept (acceptance.py): a promising candidate is re-run with another seed; if both
     runs beat the incumbent by the noise margin, it becomes the incumbent and a commit on the
     run's git branch (branch.py). Resume derives the same through the same functions. In a
     population, a candidate that beats its niche's elite (or opens a niche) is re-run too; when
     its runs agree it is an elite, and its island's best is a commit on the island's branch.
  6. learn and sync (learning.py): finished results become samples, the learner updates, the
     policy server loads the new adapter.
  7. stop (oracle.py): the oracle decides when; the reason is recorded.
Every incumbent's runs are also scored on the environment's sealed test split (sealed.py); nothing
that decides reads those scores back.
"""
from __future__ import annotations

import queue
import time
from concurrent.futures import Future, ThreadPoolExecutor

import ray

from arrl.config import Config, resolve
from arrl.driver import oracle
from arrl.driver.acceptance import Acceptance, Incumbent
from arrl.driver.archive import Archive
from arrl.driver.branch import GitBranch
from arrl.driver.candidates import Candidates
from arrl.driver.identity import normalize, sha
from arrl.driver.live import Live
from arrl.driver.results import Results
from arrl.driver.sealed import SealedTestSplit
from arrl.ledger.store import Store
from arrl.ops.metrics import RunMetrics
from arrl.ops.placement import Placement
from arrl.target import Target
from arrl.worker.abort import Rule, reference_runs
from env import profiles


class Driver(Candidates, Acceptance, Results, SealedTestSplit):
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
        self.live = Live(store.root)  # what the workers do now, for `arrl status --watch`
        self._ref_cache: dict = {}  # incumbent id -> its learning curves (self-evaluation)
        self.floor = resolve.floor_bpb(cfg.integrity.floor_bpb, profiles.get(target.profile).bpb_floor)
        # between_runs: the policy server and the learner work on the workers' cores, so only while none trains
        self.between_runs = placement is not None and placement.between_runs
        self.policy_paused = False
        self.policy_pauses = int(store.get("policy_pauses", 0) or 0)  # training stretches with the server stopped
        self.warm_up = warm_up  # a local policy server makes its first proposals before anything trains
        self.tests: dict = {}  # exp id -> incumbent id: runs whose models wait for the test split's score
        self.test_inflight: dict = {}  # ObjectRef -> (exp id, incumbent id, worker index)
        self.warned: str | None = (store.get("noise") or {}).get("warning")  # a resume does not warn again
        self.novelty = None  # arrl.driver.novelty.Index of the programs run, built when a threshold is set
        # [search] strategy = population: parents drawn from an archive of islands and niches (archive.py)
        self.archive = Archive(store, cfg.search, target.catalog, self.floor, cfg.integrity.reproduce_z, log) \
            if cfg.search.strategy == "population" else None

    def run(self) -> str:
        self._restore()
        self._schedule_baselines()
        if not self.store.accepted():  # candidates may start while the baselines run
            self.incumbent.exp_id = self.store.baselines()[0]["id"]
        if self._baselines_done():
            self._restore_baseline()
            if self.archive is not None and self.store.programs():
                self.log(f"resume: archive {self.archive.summary(self.noise.sigma)}")
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
                self.learning.step(start=may_start and not self.stop_reason, queued=self._queued_groups())
            if not self.stop_reason and not (self.learning is not None and self.learning.holding()):
                self._prefetch(start=may_start and not (self.between_runs and self._parts_busy()))
            self._fill()
            if self.between_runs:
                self._pause_policy()
            self.metrics.publish(self.store.gauges, self._best())
            self.live.poll(self.workers, self.inflight, self.learning, self.fetch is not None and not self.fetch.done())
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
        self._island_commits()  # an island's best as the run ends (the noise moved since its last commit)
        with self.store.tx():
            self.store.put("status", "finished")
            self.store.put("stop_reason", self.stop_reason)
            self.store.put("wall_s", self.wall_before + time.time() - self.t_session)
            self.store.event("stopped", reason=self.stop_reason)
        self.metrics.publish(self.store.gauges, self._best(), force=True)
        self.pool.shutdown(wait=False, cancel_futures=True)
        return self.stop_reason

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
                self._commit(row, a["val_bpb"], src)
            self._queue_tests(row["id"], self._accepted_ids(row))
        self.branch.ensure(self.target.source())

    def _schedule_baselines(self) -> None:
        n = self.cfg.search.noise_runs or 1
        have = self.store.baselines()
        src = self.target.source()
        for i in range(len(have), n):
            with self.store.tx():
                eid = self.store.add_experiment("baseline", i, sha(src), sha(normalize(src)), summary="baseline")
                self.store.write_source(eid, src)

    def _baselines_done(self) -> bool:
        n = self.cfg.search.noise_runs or 1
        return len(self.store.baselines(done=True)) >= n

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

    def _abort_rule(self, row) -> Rule | None:
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
        return Rule(reference=self._ref_cache[inc], z=s.abort_z, margin=s.abort_margin, every=s.abort_every,
                    min_frac=s.abort_min_frac)

    def _budget_left(self) -> bool:
        cap = self.cfg.oracle.max_experiments
        if not cap:
            return True
        return self.store.started_runs(self.cfg.oracle.count_duplicates) < cap

    def _counted(self) -> tuple[int, int]:
        """(experiments run, experiments since the last acceptance): candidates and confirmations that ran. By
        default only runs that trained count, and duplicates answered from the ledger count toward
        `max_failed_edits` instead; with `[oracle] count_duplicates` they count as experiments too."""
        last = self.incumbent.exp_id if self.store.accepted() else 0
        return self.store.counted_runs(last, self.cfg.oracle.count_duplicates)

    def progress(self) -> oracle.Progress:
        n, since = self._counted()
        gpu_s = self.store.busy_seconds()
        failed = self.store.candidates_since_last_run(self.cfg.oracle.count_duplicates)
        return oracle.Progress(experiments=n, since_accept=since, failed_edits_in_a_row=failed,
                               wall_s=self.wall_before + time.time() - self.t_session,
                               gpu_hours=gpu_s / 3600 * max(self.cfg.workers.gpus_per_worker, 1.0),
                               incumbent_bpb=self.incumbent.bpb if self.incumbent.values else None,
                               stop_requested=(self.store.root / "STOP").exists())

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

    def _queued_groups(self) -> frozenset:
        """The proposal groups (state keys) of proposals fetched but not yet experiments: a batch of whole
        groups waits for them (arrl.driver.learning)."""
        return frozenset(item[0].state_key for item in list(self.proposals.queue))

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
