"""The acceptance chain, with the incumbent it moves: a finished run is scored (reward, integrity), a
promising candidate is confirmed by a second run in a fresh sandbox, a confirmed one is accepted on
the centre of its runs and committed on the run's branch. The noise every step is judged against is
estimated here from the ledger's runs. On resume the same functions derive it all again from the
ledger (`_rederive`). Part of the Driver (arrl.driver.loop)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from arrl.driver import contention, edits, integrity, noise
from arrl.driver.reward import reward as compute_reward
from arrl.worker.outcome import Outcome


@dataclass
class Incumbent:
    exp_id: int  # the experiment that made it (the first baseline for the start)
    source: str
    values: list  # val_bpb of its runs

    @property
    def bpb(self) -> float:
        """The robust centre of its runs (their median)."""
        return noise.centre(self.values)


class Acceptance:
    """Mixed into Driver: its methods use the Driver's state (self.store, self.cfg, self.incumbent, ...)."""

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
        if self.archive is not None:  # a parent drawn from the archive: its program's runs
            v = self.archive.value_of(inc_id)
            if v is not None:
                return v
        acc = self.store.accepted_value(inc_id)
        if acc is not None:
            return acc
        base = [r["val_bpb"] for r in self.store.baselines(done=True, ok=True)]
        return noise.centre(base) if base else None

    def _maybe_confirm(self, row, status: str, val_bpb: float | None) -> None:
        if self.archive is not None and row["island"] is not None:
            self._maybe_elite(row, status, val_bpb)
            return
        if row["incumbent_id"] != self.incumbent.exp_id or status != "ok":
            return
        n_inc = len(self.incumbent.values)
        runs = self._runs_of(row["norm_sha"]) if self.cfg.search.rerun_repeats else []
        if len(runs) >= 2:  # a re-run repeat: its runs together are the evidence, with no extra confirmation
            self._judge(row, runs)
            return
        if not noise.promising(val_bpb, self.incumbent.bpb, self.noise, self.cfg.search.margin_z, n_inc):
            return
        if not self.cfg.search.confirm:
            self._accept(row, [val_bpb])
            return
        self._schedule_confirm(row)

    def _maybe_elite(self, row, status: str, val_bpb: float | None) -> None:
        """Population: a candidate's run earns a confirmation run when it beats the incumbent, or (`[search]
        confirm_elites`) its island's best elite (`best`) or its niche's elite or opens a niche (`niche`); once
        its runs agree it is an elite (archive.py)."""
        if status != "ok" or val_bpb is None:
            return
        s, n = self.cfg.search, self.noise
        runs = self._runs_of(row["norm_sha"]) if s.rerun_repeats else []
        if len(runs) >= 2:
            self._judge(row, runs)
            return
        if s.confirm_elites == "best":
            elite = self.archive.best(row["island"], n.sigma)
        else:
            niche = self.archive.niche_of(row["norm_sha"], row["island"])
            elite = self.archive.elites(row["island"], n.sigma).get(niche) if niche is not None else None
        if elite is not None and elite.norm == row["norm_sha"]:
            return  # the elite itself, run again
        beats = elite is None or noise.promising(val_bpb, elite.value, n, s.margin_z, len(elite.values))
        if beats or noise.promising(val_bpb, self.incumbent.bpb, n, s.margin_z, len(self.incumbent.values)):
            self._schedule_confirm(row)

    def _island_commits(self) -> None:
        """Population: each island's best elite as a commit on the island's branch `arrl/<run>-island-<i>`
        (once per elite; idempotent, so a resumed driver commits what a dead one did not)."""
        if self.archive is None or not self._baselines_done():
            return
        for i in range(self.archive.islands):
            b = self.archive.best(i, self.noise.sigma)
            path = self.store.exp_dir(b.exp_id) / "train.py" if b is not None else None
            if b is None or b.via == "start" or not path.is_file():
                continue
            row = self.store.experiment(b.exp_id)
            self.branch.commit_to(f"{self.branch.name}-island-{i}", b.exp_id, path.read_text(),
                                  f"exp {b.exp_id}: val_bpb {b.value:.6f} ({len(b.values)} runs) | "
                                  f"{row['summary'] or ''}", row["diff"] or "")

    def _schedule_confirm(self, row) -> None:
        """Re-run a candidate with another seed in a fresh sandbox (once)."""
        if self.store.confirmations(row["id"]):
            return  # already scheduled (a resumed driver re-deriving)
        src = (self.store.exp_dir(row["id"]) / "train.py").read_text()
        with self.store.tx():
            eid = self.store.add_experiment("confirm", row["seed"] + 7919, row["source_sha"], row["norm_sha"],
                                            row["proposal_id"], row["id"], row["incumbent_id"], row["summary"],
                                            row["diff"], island=row["island"])
            self.store.write_source(eid, src)

    def _maybe_accept(self, confirm_row) -> None:
        cand = self.store.experiment(confirm_row["parent"])
        conf = self.store.experiment(confirm_row["id"])
        if cand["status"] == "suspicious":
            if cand["reward"] is not None or not self._resolve(cand, conf):
                return
            cand = self.store.experiment(cand["id"])
            if not noise.promising(cand["val_bpb"], self.incumbent.bpb, self.noise, self.cfg.search.margin_z,
                                   len(self.incumbent.values)):
                return
        if self.archive is not None and cand["island"] is not None:
            self._island_commits()  # its runs may make it an elite, and its island's best
        elif cand["incumbent_id"] != self.incumbent.exp_id:
            self.store.event("stale_confirmation", exp=cand["id"])
            return
        # with re-run repeats every run of the source is evidence, else the candidate and this confirmation
        self._judge(cand, self._runs_of(cand["norm_sha"]) if self.cfg.search.rerun_repeats else [cand, conf])

    def _judge(self, cand, runs: list) -> None:
        """Accept `cand` on the mean of `runs` (every run of its source) when all are `ok`, none is below the
        floor, and the mean beats the incumbent by the margin for that many runs."""
        vals = [r["val_bpb"] for r in runs]
        if runs and all(r["status"] == "ok" for r in runs) and min(vals) >= self.floor and noise.confirmed(
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
        value = noise.centre(vals)
        prev = self.incumbent.bpb
        with self.store.tx():
            self.store.accept(cand["id"], value, prev)
            if run_ids is not None:
                self.store.event("accepted_runs", exp=cand["id"], runs=run_ids)
        src = (self.store.exp_dir(cand["id"]) / "train.py").read_text()
        self.incumbent = Incumbent(cand["id"], src, list(vals))
        self._commit(cand, value, src)
        self.log(f"accepted exp {cand['id']}: val_bpb {prev:.4f} -> {value:.4f}  {cand['summary']}")
        self._queue_tests(cand["id"], run_ids or [cand["id"]])
        # proposals made for the old incumbent are stale now (a population's were made for their parents)
        while self.archive is None and not self.proposals.empty():
            self.proposals.get_nowait()

    def _commit(self, cand, value: float, src: str) -> None:
        """The accepted script as a commit on the run's branch (once), its sha in the ledger."""
        sha_ = self.branch.commit_once(cand["id"], src, f"exp {cand['id']}: val_bpb {value:.6f} | "
                                       f"{cand['summary'] or ''}", cand["diff"] or "")
        with self.store.tx():
            self.store.set_commit(cand["id"], sha_)

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
                base_bpb = noise.centre(vals)
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
                o = Outcome.from_dict(json.loads(r["outcome"])) if r["outcome"] else Outcome(r["status"], r["val_bpb"])
                again |= self._rerun_contended(r, o, why, done=True)
        return again

    def _estimate_noise(self, pool: bool | None = None) -> noise.Noise:
        """The noise sigma from the ledger's done runs: the baselines, and with `pool` (default `[search]
        pool_noise`) every source that ran `ok` more than once (a candidate with its confirmation, a re-run
        repeat), pooled. A result answered from the ledger is not a run; a suspicious one that did not
        reproduce is not `ok`."""
        pool = self.cfg.search.pool_noise if pool is None else pool
        return noise.pooled(self.store.ok_values_by_source(baselines_only=not pool), self.cfg.search.min_sigma)

    def _put_noise(self) -> None:
        n = self.noise
        base = self._estimate_noise(pool=False) if self.cfg.search.pool_noise else None
        warn = noise.warning(n, self.target.sigma_max_bpb, base)
        self.store.put("noise", {"sigma": n.sigma, "raw": n.raw, "runs": n.runs, "dof": n.dof, "estimator": "robust",
                                 "warning": warn})
        if warn != self.warned:
            self.warned = warn
            if warn:
                self.log(f"warning: {warn}")
                self.store.event("sigma_warning", warning=warn, sigma=n.sigma)  # a notice (arrl.track.notices)

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
        if self.archive is not None:  # every program's first run in the archive may earn its confirmation
            for p in self.store.programs():
                row = self.store.experiment(p["exp_id"])
                if p["via"] == "trained" and row["kind"] == "candidate" and row["status"] == "ok":
                    self._maybe_confirm(row, "ok", row["val_bpb"])
        for row in self.store.ok_candidates_for(self.incumbent.exp_id):
            self._maybe_confirm(row, "ok", row["val_bpb"])
        for row in self.store.confirmations(done=True):
            cand = self.store.experiment(row["parent"])
            if (cand["incumbent_id"] == self.incumbent.exp_id or (self.archive is not None and cand["island"]
                                                                   is not None)) \
                    and not self.store.is_accepted(cand["id"]):
                self._maybe_accept(row)
        self._island_commits()
