"""A finished experiment's result: collected from its worker (a dead worker's run goes back to pending,
a sandbox failure runs again), checked for contention (a run that got far less compute than it should
runs again, and is never scored), written to the ledger with its reward in one transaction, and
handed to the acceptance chain. Part of the Driver (arrl.driver.loop)."""

from __future__ import annotations

import json
import time

import ray

from arrl.driver import contention
from arrl.worker.outcome import Outcome

INFRA_ATTEMPTS = 3  # runs of one experiment that may end in a sandbox error before it is recorded as a crash


class Results:
    """Mixed into Driver: its methods use the Driver's state (self.store, self.cfg, self.incumbent, ...)."""

    def _handle(self, ref) -> None:
        exp_id, w = self.inflight.pop(ref)
        self.busy.discard(w)
        try:
            outcome = ray.get(ref)
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
            outcome = Outcome("crash", message=f"worker error: {str(e)[:300]}")
        self._record(exp_id, outcome)

    def _record(self, exp_id: int, o: Outcome) -> None:
        row = self.store.experiment(exp_id)
        d = self.store.exp_dir(exp_id)
        record = o.to_dict()
        (d / "log_tail.txt").write_text(o.log_tail)
        (d / "curve.json").write_text(_json(record["curve"]))
        (d / "outcome.json").write_text(_json(record))
        status, r, message = o.status, None, o.message
        why_contended = self._contended(row, o)
        if why_contended and self._rerun_contended(row, o, why_contended):
            return
        if why_contended:  # contended again after every re-run: recorded, never scored
            status, message = "contended", f"{why_contended} (after {row['attempts']} runs)"
        elif row["kind"] != "baseline":
            status, r, why = self._score(row, status, o.val_bpb)
            message = why or message
        tp = _throughput(o)
        with self.store.tx():
            fresh = self.store.finish(exp_id, status=status, val_bpb=None if why_contended else o.val_bpb,
                                      train_s=o.timings.train_s, wall_s=o.timings.wall_s,
                                      peak_rss_mb=o.peak_rss_mb, message=message[:1000], reward=r,
                                      outcome={k: v for k, v in record.items() if k != "log_tail"},
                                      steps=o.steps, tokens=o.tokens,
                                      tokens_per_s=tp.rate if o.tokens is not None else None, cpu_s=o.cpu_s,
                                      cpu_share=o.cpu_share, cores=o.cores, foreign_share=o.foreign_share)
            self.store.put("wall_s", self.wall_before + time.time() - self.t_session)
            moved = []
            if fresh and self.archive is not None and status == "ok" and row["kind"] != "baseline":
                # the archive's row is written with the result: a resumed driver finds both or neither
                moved = self.archive.add_run(self.store.experiment(exp_id), (d / "train.py").read_text(), record,
                                             self.noise.sigma)
        for exp, frm, to in moved:
            self.log(f"archive: island {frm}'s best elite (exp {exp}) migrated to island {to}")
        if moved:
            self._island_commits()
        if not fresh:
            return
        self.log(f"exp {exp_id:>4} {row['kind']:<9} {status:<14} val_bpb "
                 f"{'-' if o.val_bpb is None else format(o.val_bpb, '.4f')}"
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
            self._maybe_confirm(row, o.status, o.val_bpb)
        elif row["kind"] == "confirm":
            self._update_noise()
            self._maybe_accept(row)

    def _contended(self, row, o: Outcome) -> str | None:
        """Why this run got far less compute than it should have (arrl.driver.contention), or None."""
        c = self.cfg.contention
        if not c.check or o.status not in ("ok", "aborted", "timeout"):
            return None
        same = [contention.Throughput(r["steps"], r["tokens"], r["train_s"], None)
                for r in self.store.ok_throughputs_of(row["norm_sha"], row["id"])]
        t = _throughput(o)
        if not o.cores:  # not pinned (placement off): its cores are shared by design, not by accident
            t = contention.Throughput(t.steps, t.tokens, t.train_s, None)
        return contention.verdict(t, same, self._rule())

    def _rerun_contended(self, row, o: Outcome, why: str, done: bool = False) -> bool:
        """Send a contended run back to pending (its outcome kept in a `contended` event and file); False once
        it has had its `[contention] reruns`."""
        if row["attempts"] > self.cfg.contention.reruns:
            return False
        d = self.store.exp_dir(row["id"])
        (d / f"outcome-contended-{row['attempts']}.json").write_text(_json(o.to_dict()))
        t = _throughput(o)
        with self.store.tx():
            again = self.store.redo(row["id"]) if done else self.store.requeue(row["id"])
            if again:
                self.store.event("contended", exp=row["id"], attempt=row["attempts"], reason=why[:300],
                                 foreign_share=t.foreign_share, tokens_per_s=t.rate, steps=t.steps,
                                 val_bpb=o.val_bpb)
        if again:
            self.log(f"exp {row['id']:>4} {row['kind']:<9} contended: {why}; re-running it (attempt "
                     f"{row['attempts']} of {self.cfg.contention.reruns + 1})"[:220])
        return again

    def _rule(self) -> contention.Rule:
        c = self.cfg.contention
        return contention.Rule(c.max_foreign_share, c.min_ratio)


def _throughput(o: Outcome) -> contention.Throughput:
    return contention.Throughput(o.steps, o.tokens, o.timings.train_s, o.foreign_share)


def _json(obj) -> str:
    return json.dumps(obj, indent=1, default=str)
