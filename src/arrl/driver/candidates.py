"""From a proposal to an experiment: the policy's state, proposals fetched in the background, and each
proposal turned into a row: edit -> static guard -> de-duplication (or a re-run of a repeated source)
-> experiment with its script. Part of the Driver (arrl.driver.loop)."""

from __future__ import annotations

import queue
import time

from arrl.driver import edits
from arrl.driver import guard as edit_policy
from arrl.driver import noise
from arrl.driver.acceptance import Incumbent
from arrl.driver.identity import normalize, sha
from arrl.driver.novelty import Index
from arrl.driver.reward import reward as compute_reward
from arrl.policy.prompt import HistoryEntry, PolicyState
from arrl.target import catalog_values


class Candidates:
    """Mixed into Driver: its methods use the Driver's state (self.store, self.cfg, self.incumbent, ...)."""

    def state(self, parent: Incumbent | None = None, inspirations: tuple = ()) -> PolicyState:
        """The policy's state: the incumbent to edit (or, in a population, `parent`), the history, the best."""
        parent = parent or self.incumbent
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
                           source=parent.source, fmt=self.cfg.policy.fmt,
                           incumbent_bpb=parent.bpb if parent.values else None,
                           catalog=self.target.catalog, editable=self.target.editable, history=self._history(),
                           prompt_code=self.target.prompt_code,
                           best=best, diagnostics=diag, inspirations=inspirations)

    def _next_state(self) -> tuple[PolicyState, int | None, int | None]:
        """(state, parent's exp id, island) of the next proposal request. Greedy: the incumbent, whose id is
        taken when the proposals arrive. Population: a parent drawn from the archive, recorded with the
        request; its island's elites are the inspirations."""
        if self.archive is None:
            return self.state(), None, None
        n = int(self.store.get("requests", 0) or 0)
        with self.store.tx():
            self.store.put("requests", n + 1)
        if not self._baselines_done():  # the archive starts with the baselines: until then, the start program
            return self.state(), self.incumbent.exp_id, n % self.archive.islands
        island, prog, others = self.archive.choose(n, f"{self.cfg.name}:{self.cfg.policy.seed}", self.noise.sigma)
        if prog is None:  # no usable elite on the island (its parents' files are gone): the incumbent
            return self.state(), self.incumbent.exp_id, island
        parent = self._parent(prog.exp_id)
        if parent is None:
            return self.state(), self.incumbent.exp_id, island
        lines = tuple(self._inspiration(p, parent.source) for p in others)
        return self.state(parent, lines), prog.exp_id, island

    def _parent(self, exp_id: int) -> Incumbent | None:
        """The program experiment `exp_id` ran, with its values, as a parent; None when its train.py is gone."""
        path = self.store.exp_dir(exp_id) / "train.py"
        if not path.is_file():
            return None
        return Incumbent(exp_id, path.read_text(), [v for v in [self.archive.value_of(exp_id)] if v is not None])

    def _inspiration(self, prog, parent_source: str) -> str:
        """One line about another elite: its catalog settings where they differ from the parent's, else its
        experiment's summary; its value and runs."""
        row = self.store.experiment(prog.exp_id)
        what = row["summary"] or ""
        if self.target.catalog:
            path = self.store.exp_dir(prog.exp_id) / "train.py"
            if path.is_file():
                mine = catalog_values(parent_source, self.target.catalog)
                theirs = catalog_values(path.read_text(), self.target.catalog)
                what = ", ".join(f"{k} = {v}" for k, v in theirs.items() if mine.get(k) != v) or "the same knobs"
        return f"{what} -> val_bpb {prog.value:.4f} ({len(prog.values)} runs)"

    def _history(self) -> tuple[HistoryEntry, ...]:
        rows = self.store.recent_candidates(self.cfg.search.history_k)
        return tuple(HistoryEntry(r["summary"] or "", r["status"], r["val_bpb"], r["reward"],
                                  r["message"] if r["status"] != "ok" else "") for r in rows)

    def _prefetch(self, start: bool = True) -> None:
        """Collect a finished fetch of proposals; with `start`, ask for the next group when the queue runs low."""
        if self.fetch is not None:
            if not self.fetch.done():
                return
            try:
                props, seconds, base_id, island = self.fetch.result()
                self.metrics.proposals(len(props), seconds)
                for p in props:
                    self.proposals.put((p, self.incumbent.exp_id if island is None else base_id, island))
            except Exception as e:  # noqa: BLE001 - a policy failure is recorded and retried
                self.store.event("policy_error", error=str(e)[:500])
                self.log(f"policy error (retrying): {e}")
                time.sleep(1.0)
            self.fetch = None
        if start and self.proposals.qsize() < len(self.workers):
            st, base_id, island = self._next_state()
            self.fetch = self.pool.submit(self._propose, st, self.cfg.policy.group_size, base_id, island)

    def _propose(self, st, n: int, base_id: int | None = None, island: int | None = None) -> tuple:
        t0 = time.monotonic()
        props = self.policy.propose(st, n)
        return props, time.monotonic() - t0, base_id, island

    def _candidate(self) -> int | None:
        """Turn the next proposal into an experiment row; None when no proposal is ready."""
        try:
            prop, base_id, island = self.proposals.get_nowait()
        except queue.Empty:
            return None
        if island is None and base_id != self.incumbent.exp_id:
            self.store.event("stale_proposal", proposal=prop.id)  # made for an older incumbent
            return -1
        if self.learning is not None and prop.adapter_version < self.learning.served:
            # made by an adapter the server no longer serves: the new one proposes instead (at the default's
            # one update per run, queued proposals of the old one used to fill every slot left after the load)
            self.store.event("stale_proposal", proposal=prop.id, adapter_version=prop.adapter_version,
                             served=self.learning.served)
            return -1
        inc = self.incumbent
        if island is not None:  # population: the parent drawn for this request
            inc = self._parent(base_id) if base_id != self.incumbent.exp_id else self.incumbent
            if inc is None:
                with self.store.tx():
                    self.store.add_proposal(prop.to_dict())
                    self.store.event("parent_missing", exp=base_id, proposal=prop.id)
                self.log(f"proposal {prop.id}: its parent exp {base_id} is gone (no train.py); not run")
                return -1
        res = edits.apply(inc.source, prop.text, prop.fmt, self.target.catalog, self.target.editable)
        summary = _summary(prop.text, res)
        with self.store.tx():
            self.store.add_proposal(prop.to_dict())
            if not res.ok:
                eid = self.store.add_experiment("candidate", 0, sha(prop.text), "", prop.id, None, inc.exp_id,
                                                summary, island=island)
                r = compute_reward("edit_failed", None, inc.bpb, self.noise.sigma, self.cfg.reward)
                self.store.finish(eid, status="edit_failed", message=f"{res.failure}: {res.message}", reward=r)
                self.log(f"exp {eid:>4} candidate edit_failed    {res.failure}: {res.message}"[:160])
                return -1
            verdict = edit_policy.check(inc.source, res.source, self.target.allow)
            norm = sha(normalize(res.source))
            eid = self.store.add_experiment("candidate", self._seed(), sha(res.source), norm, prop.id, None,
                                            inc.exp_id, summary, res.diff, island=island)
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
                         f"{noise.centre(r['val_bpb'] for r in prior):.4f}, not accepted): re-running it")
            elif dup is None and self._near(eid, res.source, inc):
                return -1
            elif dup is not None:
                r = compute_reward(dup["status"], dup["val_bpb"], inc.bpb, self.noise.sigma, self.cfg.reward,
                                   res.lines_added) if self._baselines_done() and inc.values else None
                self.store.finish(eid, status=dup["status"], val_bpb=dup["val_bpb"], message=dup["message"],
                                  reused_from=dup["id"], reward=r)
                self.store.event("deduplicated", exp=eid, of=dup["id"])
                self.log(f"exp {eid:>4} candidate {dup['status']:<14} (same source as exp {dup['id']}, not re-run)")
                return -1
            self.store.write_source(eid, res.source, res.diff)
        if self.novelty is not None:
            self.novelty.add(eid, res.source)
        return eid

    def _near(self, eid: int, source: str, inc) -> bool:
        """Novelty before compute (`[search] novelty_catalog`, `novelty_source`; both 0 by default): a new
        program at most that far from one already run (or queued) is answered without training, status
        `near_duplicate` with its penalty. Call it inside the candidate's transaction."""
        s = self.cfg.search
        if not s.novelty_catalog and not s.novelty_source:
            return False
        if self.novelty is None:  # built once from the ledger: every program that ran or will run
            self.novelty = Index(self.target.catalog)
            for exp_id in self.store.programs_run():
                path = self.store.exp_dir(exp_id) / "train.py"
                if path.is_file():
                    self.novelty.add(exp_id, path.read_text())
        near = self.novelty.nearest(source)
        limit = s.novelty_catalog if near is not None and near.kind == "catalog" else s.novelty_source
        if near is None or near.distance > limit:
            return False
        r = compute_reward("near_duplicate", None, inc.bpb, self.noise.sigma, self.cfg.reward)
        why = f"{near.kind} distance {near.distance:.3f} to exp {near.exp_id} (at most {limit:g}: not trained)"
        self.store.finish(eid, status="near_duplicate", message=why, reward=r)
        self.store.event("near_duplicate", exp=eid, of=near.exp_id, distance=round(near.distance, 6), by=near.kind)
        self.log(f"exp {eid:>4} candidate near_duplicate {why}"[:160])
        return True

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
        if noise.centre(r["val_bpb"] for r in runs) >= self.incumbent.bpb:
            return None
        return runs

    def _seed(self) -> int:
        return 1000 + self.store.experiment_count()


def _summary(text: str, res) -> str:
    """One line saying what an edit does, for history and commit messages."""
    t = text.strip()
    if t.startswith("{"):
        return " ".join(t.split())[:120]
    if res.ok:
        added = [ln[1:].strip() for ln in res.diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
        return ("; ".join(a for a in added if a)[:120]) or "deletes lines"
    return " ".join(t.split())[:120]
