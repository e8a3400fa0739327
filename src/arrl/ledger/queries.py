"""Every question arrl asks its ledger, by name. `Store` (the driver's writer) and `Reader` (a
read-only view for status, reports and benchmarks) both answer them, over their own connection.

Experiment rows come back as `sqlite3.Row` (columns by name, the schema in store.py); counts and
values as plain numbers. A query takes `count_duplicates` where the run's `[oracle]
count_duplicates` decides whether a result answered from the ledger counts as a run.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

# What the learner may learn from: a scored candidate whose proposal carries token ids and logprobs.
LEARNABLE = ("e.kind='candidate' AND e.state='done' AND e.reward IS NOT NULL AND "
             "json_array_length(p.record, '$.token_ids') > 0 AND "
             "json_array_length(p.record, '$.token_ids') = json_array_length(p.record, '$.logprobs') AND "
             "json_array_length(p.record, '$.prompt_token_ids') > 0")
NOT_RUN = ("edit_failed", "rejected", "near_duplicate")  # candidate statuses that never reached a sandbox
NOT_A_RUN = "(" + ", ".join(f"'{s}'" for s in NOT_RUN) + ")"  # the same, for SQL


@dataclass(frozen=True)
class Gauges:
    """What the dashboard's ledger gauges show (arrl.ops.metrics)."""
    status_counts: dict  # finished experiments by status
    running: int
    accepted: int
    candidate_rewards: list
    version: int  # the newest adapter version, 0 for none
    version_metrics: dict  # its learner metrics (kl, clip_fraction, ...)


def _trained(count_duplicates: bool) -> str:
    return "" if count_duplicates else " AND reused_from IS NULL"


class Queries:
    db: sqlite3.Connection

    def _all(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        return self.db.execute(sql, args).fetchall()

    def _one(self, sql: str, args: tuple = ()):
        row = self.db.execute(sql, args).fetchone()
        return None if row is None else row[0]

    # -- experiments by role ---------------------------------------------------------------------
    def baselines(self, done: bool = False, ok: bool = False) -> list[sqlite3.Row]:
        """The baseline runs in id order (the first one, done or not, is the starting incumbent's id)."""
        return self._all("SELECT * FROM experiments WHERE kind='baseline'" + (" AND state='done'" if done else "")
                         + (" AND status='ok'" if ok else "") + " ORDER BY id")

    def confirmations(self, parent: int | None = None, done: bool = False) -> list[sqlite3.Row]:
        """Confirmation runs, of one candidate or of all."""
        where = "kind='confirm'" + ("" if parent is None else " AND parent=?") + (" AND state='done'" if done else "")
        return self._all(f"SELECT * FROM experiments WHERE {where} ORDER BY id", () if parent is None else (parent,))

    def trained_runs_of(self, norm: str) -> list[sqlite3.Row]:
        """Every finished run of one normalised source that trained (candidates and confirmations, not the
        baselines nor results answered from the ledger), oldest first."""
        return self._all("SELECT * FROM experiments WHERE norm_sha=? AND kind!='baseline' AND reused_from IS NULL "
                         "AND state='done' AND status IS NOT NULL AND status!='contended' ORDER BY id", (norm,))

    def experiment(self, exp_id: int) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM experiments WHERE id=?", (exp_id,)).fetchone()

    def programs(self, island: int | None = None) -> list[sqlite3.Row]:
        """The archive's rows (`[search] strategy = population`), by island, then in the order they joined."""
        if island is None:
            return self._all("SELECT * FROM archive ORDER BY island, created, exp_id")
        return self._all("SELECT * FROM archive WHERE island=? ORDER BY created, exp_id", (island,))

    def programs_run(self) -> list[int]:
        """Experiments whose program ran, runs or will run (not answered from the ledger, not a failed or
        refused edit), oldest first: what novelty before compute compares a new program with."""
        return [r[0] for r in self._all(f"SELECT id FROM experiments WHERE reused_from IS NULL AND (state!='done' OR "
                                        f"status NOT IN {NOT_A_RUN}) ORDER BY id")]

    def candidates_by_island(self) -> dict[int, int]:
        """Population: how many candidates (every status) each island's parents have had."""
        return {r[0]: r[1] for r in self._all("SELECT island, COUNT(*) FROM experiments WHERE kind='candidate' AND "
                                              "island IS NOT NULL GROUP BY island")}

    def source_in_flight(self, norm: str, exclude: int) -> bool:
        """Whether another run of the source is pending or running."""
        return self._one("SELECT 1 FROM experiments WHERE norm_sha=? AND reused_from IS NULL AND state!='done' AND "
                         "id!=? LIMIT 1", (norm, exclude)) is not None

    def ok_throughputs_of(self, norm: str, exclude: int) -> list[sqlite3.Row]:
        """(steps, tokens, train_s) of the other `ok` runs of a source that trained."""
        return self._all("SELECT steps, tokens, train_s FROM experiments WHERE norm_sha=? AND id!=? AND "
                         "state='done' AND status='ok' AND reused_from IS NULL", (norm, exclude))

    def ok_values_by_source(self, baselines_only: bool = False) -> list[list[float]]:
        """The val_bpb of every `ok` run that trained, grouped by normalised source (the noise's input)."""
        groups: dict = {}
        for norm, v in self._all("SELECT norm_sha, val_bpb FROM experiments WHERE state='done' AND status='ok' AND "
                                 "reused_from IS NULL" + (" AND kind='baseline'" if baselines_only else "")
                                 + " ORDER BY id"):
            groups.setdefault(norm, []).append(v)
        return list(groups.values())

    def pending_ids(self, limit: int = -1) -> list[int]:
        return [r[0] for r in self._all("SELECT id FROM experiments WHERE state='pending' ORDER BY id LIMIT ?",
                                        (limit,))]

    def experiment_count(self) -> int:
        return self._one("SELECT COUNT(*) FROM experiments")

    def done_count(self) -> int:
        return self._one("SELECT COUNT(*) FROM experiments WHERE state='done'")

    # -- candidates: scoring, history, what the budget counts ------------------------------------
    def unscored_candidates(self) -> list[sqlite3.Row]:
        """Finished candidates without a reward that are not waiting to be reproduced."""
        return self._all("SELECT * FROM experiments WHERE kind='candidate' AND state='done' AND reward IS NULL AND "
                         "status!='suspicious' ORDER BY id")

    def unresolved_suspicious(self) -> list[sqlite3.Row]:
        return self._all("SELECT * FROM experiments WHERE kind='candidate' AND state='done' AND reward IS NULL AND "
                         "status='suspicious' AND reused_from IS NULL ORDER BY id")

    def ok_candidates_for(self, incumbent_id: int) -> list[sqlite3.Row]:
        """Candidates that trained `ok` against this incumbent."""
        return self._all("SELECT * FROM experiments WHERE kind='candidate' AND state='done' AND status='ok' AND "
                         "reused_from IS NULL AND incumbent_id=? ORDER BY id", (incumbent_id,))

    def recent_candidates(self, k: int) -> list[sqlite3.Row]:
        """The last `k` finished candidates, oldest first (the prompt's history)."""
        return self._all("SELECT * FROM (SELECT * FROM experiments WHERE kind='candidate' AND state='done' "
                         "ORDER BY id DESC LIMIT ?) ORDER BY id", (k,))

    def last_failed_candidate_id(self) -> int | None:
        """The newest candidate that ran and did not end `ok` (its log is the prompt's diagnostics)."""
        return self._one("SELECT id FROM experiments WHERE kind='candidate' AND state='done' AND status NOT IN "
                         f"('ok', {NOT_A_RUN[1:-1]}) ORDER BY id DESC LIMIT 1")

    def counted_runs(self, since_id: int, count_duplicates: bool) -> tuple[int, int]:
        """(runs, runs after `since_id`) among candidates and confirmations that ran."""
        row = self.db.execute("SELECT COUNT(*), COALESCE(SUM(id > ?), 0) FROM experiments WHERE kind!='baseline' AND "
                              f"state='done' AND status NOT IN {NOT_A_RUN}" + _trained(count_duplicates),
                              (since_id,)).fetchone()
        return row[0], row[1]

    def started_runs(self, count_duplicates: bool) -> int:
        """Candidates and confirmations started or run: what `[oracle] max_experiments` caps."""
        return self._one("SELECT COUNT(*) FROM experiments WHERE kind!='baseline'" + _trained(count_duplicates)
                         + f" AND (state!='done' OR status NOT IN {NOT_A_RUN})")

    def busy_seconds(self) -> float:
        """Wall seconds of every finished run."""
        return self._one("SELECT COALESCE(SUM(wall_s), 0) FROM experiments WHERE state='done'")

    def candidates_since_last_run(self, count_duplicates: bool) -> int:
        """Candidates after the newest one that ran (or is running): failed edits in a row."""
        last = self._one("SELECT COALESCE(MAX(id), 0) FROM experiments WHERE kind='candidate' AND (state!='done' OR "
                         f"(status NOT IN {NOT_A_RUN}" + _trained(count_duplicates) + "))")
        return self._one("SELECT COUNT(*) FROM experiments WHERE kind='candidate' AND id > ?", (last,))

    def trained_in_finish_order(self) -> list[sqlite3.Row]:
        """(id, train_s, val_bpb if ok, finished) of every sandbox run, in the order they finished."""
        return self._all("SELECT id, train_s, CASE WHEN status='ok' THEN val_bpb END, finished FROM experiments "
                         f"WHERE state='done' AND reused_from IS NULL AND status NOT IN {NOT_A_RUN} "
                         "ORDER BY finished, id")

    def trained_runs(self) -> list[sqlite3.Row]:
        """Every finished run that trained or tried to (not answered from the ledger), in id order."""
        return self._all("SELECT * FROM experiments WHERE state='done' AND reused_from IS NULL ORDER BY id")

    # -- acceptances -------------------------------------------------------------------------------
    def is_accepted(self, exp_id: int) -> bool:
        return self._one("SELECT 1 FROM accepted WHERE exp_id=?", (exp_id,)) is not None

    def accepted_value(self, exp_id: int) -> float | None:
        return self._one("SELECT val_bpb FROM accepted WHERE exp_id=?", (exp_id,))

    def accepted_values(self) -> dict[int, float]:
        return {r[0]: r[1] for r in self._all("SELECT exp_id, val_bpb FROM accepted")}

    def accepted_in_order(self) -> list[sqlite3.Row]:
        """(exp_id, created) of every acceptance, in the order it was made."""
        return self._all("SELECT exp_id, created FROM accepted ORDER BY created, exp_id")

    def accepted_runs(self, exp_id: int) -> list[int] | None:
        """The runs an acceptance was decided on, where its `accepted_runs` event names them."""
        data = self._one("SELECT data FROM events WHERE kind='accepted_runs' AND json_extract(data, '$.exp')=? "
                         "ORDER BY id DESC LIMIT 1", (exp_id,))
        return None if data is None else list(json.loads(data)["runs"])

    def incumbent_run_ids(self, inc_id: int) -> list[int]:
        """The `ok` runs of an incumbent: an accepted edit and its confirmations, else the baselines."""
        if self.is_accepted(inc_id):
            return [r[0] for r in self._all("SELECT id FROM experiments WHERE id=? OR (kind='confirm' AND parent=? "
                                            "AND state='done' AND status='ok') ORDER BY id", (inc_id, inc_id))]
        return [r[0] for r in self._all("SELECT id FROM experiments WHERE kind='baseline' AND state='done' AND "
                                        "status='ok' ORDER BY id")]

    # -- learning ----------------------------------------------------------------------------------
    def stale_learnable(self, floor: int, count_duplicates: bool) -> list[sqlite3.Row]:
        """(exp id, adapter version) of learnable results not yet sampled whose proposal came from an
        adapter older than `floor`."""
        return self._all("SELECT e.id, p.adapter_version FROM experiments e JOIN proposals p ON p.id = e.proposal_id "
                         f"WHERE {LEARNABLE}" + _trained(count_duplicates).replace("reused_from", "e.reused_from")
                         + " AND p.adapter_version < ? AND e.id NOT IN (SELECT exp_id FROM samples)", (floor,))

    def unconsumed_learnable(self, limit: int, count_duplicates: bool) -> list[int]:
        """Ids of learnable results no update has consumed or dropped, oldest first (limit -1: all)."""
        return [r[0] for r in self._all(
            "SELECT e.id FROM experiments e JOIN proposals p ON p.id = e.proposal_id WHERE "
            f"{LEARNABLE}" + _trained(count_duplicates).replace("reused_from", "e.reused_from")
            + " AND e.id NOT IN (SELECT exp_id FROM samples) ORDER BY e.id LIMIT ?", (limit,))]

    def unconsumed_learnable_groups(self, count_duplicates: bool) -> list[tuple[int, str]]:
        """(exp id, proposal group) of learnable results no update has consumed or dropped, oldest first; a
        group is one request's proposals (their state key)."""
        return [(r[0], r[1]) for r in self._all(
            "SELECT e.id, p.state_key FROM experiments e JOIN proposals p ON p.id = e.proposal_id WHERE "
            f"{LEARNABLE}" + _trained(count_duplicates).replace("reused_from", "e.reused_from")
            + " AND e.id NOT IN (SELECT exp_id FROM samples) ORDER BY e.id")]

    def open_groups(self) -> set[str]:
        """Proposal groups (state keys) with a candidate that has not finished: pending or running."""
        return {r[0] for r in self._all("SELECT DISTINCT p.state_key FROM experiments e JOIN proposals p ON "
                                        "p.id = e.proposal_id WHERE e.kind='candidate' AND e.state != 'done'")}

    def learnable(self, count_duplicates: bool) -> list[int]:
        """Ids of every learnable result, consumed or not, oldest first (an offline learner's samples)."""
        return [r[0] for r in self._all(
            "SELECT e.id FROM experiments e JOIN proposals p ON p.id = e.proposal_id WHERE "
            f"{LEARNABLE}" + _trained(count_duplicates).replace("reused_from", "e.reused_from") + " ORDER BY e.id")]

    def sample_row(self, exp_id: int) -> sqlite3.Row:
        """A learnable result with its proposal's record: what the learner's sample is built from."""
        return self.db.execute("SELECT e.id, e.reward, e.status, e.incumbent_id, p.record FROM experiments e JOIN "
                               "proposals p ON p.id = e.proposal_id WHERE e.id=?", (exp_id,)).fetchone()

    def policy_versions(self) -> list[dict]:
        """Every adapter version, oldest first: its number, when it was made, and its info."""
        return [{"version": r[0], "created": r[1], **json.loads(r[2])}
                for r in self.db.execute("SELECT version, created, info FROM policy_versions ORDER BY version")]

    def last_policy_version(self) -> sqlite3.Row | None:
        """(version, info) of the newest adapter version."""
        return self.db.execute("SELECT version, info FROM policy_versions ORDER BY version DESC LIMIT 1").fetchone()

    # -- the dashboard's gauges and `arrl status` --------------------------------------------------
    def gauges(self) -> Gauges:
        last = self.last_policy_version()
        return Gauges(self.counts(), self.running_count(), self.accepted_count(), self.candidate_rewards(),
                      last[0] if last else 0, (json.loads(last[1] or "{}").get("metrics") or {}) if last else {})

    def counts(self) -> dict[str, int]:
        return dict(self._all("SELECT status, COUNT(*) FROM experiments WHERE state='done' GROUP BY status"))

    def accepted_with_summaries(self) -> list[sqlite3.Row]:
        """(exp_id, val_bpb, prev_bpb, summary) of each acceptance, in the order it was made."""
        return self._all("SELECT a.exp_id, a.val_bpb, a.prev_bpb, e.summary FROM accepted a JOIN experiments e "
                         "ON e.id=a.exp_id ORDER BY a.created")

    def runs_and_duplicates(self) -> tuple[int, int]:
        """(finished candidates and confirmations that ran or were answered from the ledger, how many of them
        were answered from the ledger)."""
        row = self.db.execute("SELECT COUNT(*), COALESCE(SUM(reused_from IS NOT NULL), 0) FROM experiments WHERE "
                              f"kind!='baseline' AND state='done' AND status NOT IN {NOT_A_RUN}").fetchone()
        return row[0], row[1]

    def newest_proposal_version(self) -> int | None:
        return self._one("SELECT MAX(adapter_version) FROM proposals")

    def sample_usage(self) -> tuple[int, int]:
        """(samples an update used, samples dropped); (0, 0) for a ledger from before the samples table."""
        if not self.has_table("samples"):
            return 0, 0
        row = self.db.execute("SELECT COALESCE(SUM(used), 0), COUNT(*) - COALESCE(SUM(used), 0) FROM samples"
                              ).fetchone()
        return row[0], row[1]

    def status_tables(self, throughput: tuple = ()) -> dict[str, list[dict]]:
        """The rows `arrl status` derives incumbents, throughput and the val/test gap from, as the export's
        tables would hold them (the `throughput` columns this ledger has; a ledger from an older arrl lacks
        them and the test_scores table, which are then simply absent)."""
        have = set(self.columns("experiments"))
        extra = "".join(f", {c}" for c in throughput if c in have)
        return {
            "experiments": [dict(r) for r in self._all(
                f"SELECT id, kind, parent, state, status, val_bpb, summary{extra} FROM experiments "
                "WHERE state='done' OR kind='baseline' ORDER BY id")],
            "accepted": [dict(r) for r in self._all("SELECT * FROM accepted")],
            "events": [dict(r) for r in self._all("SELECT * FROM events WHERE kind IN ('contended', 'accepted_runs') "
                                                  "ORDER BY id")],
            "test_scores": [dict(r) for r in self._all("SELECT * FROM test_scores")]
            if self.has_table("test_scores") else [],
        }

    def running_count(self) -> int:
        return self._one("SELECT COUNT(*) FROM experiments WHERE state='running'")

    def pending_count(self) -> int:
        return self._one("SELECT COUNT(*) FROM experiments WHERE state='pending'")

    def accepted_count(self) -> int:
        return self._one("SELECT COUNT(*) FROM accepted")

    def candidate_rewards(self) -> list[float]:
        return [r[0] for r in self._all("SELECT reward FROM experiments WHERE kind='candidate' AND state='done' AND "
                                        "reward IS NOT NULL")]

    # -- the live view (arrl.report.live) -------------------------------------------------------------
    def recent_experiments(self, k: int) -> list[sqlite3.Row]:
        """The last `k` finished experiments, newest first."""
        return self._all("SELECT id, kind, status, val_bpb, reward, summary FROM experiments WHERE state='done' "
                         "ORDER BY finished DESC, id DESC LIMIT ?", (k,))

    def running_experiments(self) -> list[sqlite3.Row]:
        return self._all("SELECT id, summary FROM experiments WHERE state='running' ORDER BY id")

    def finished_in_order(self) -> list[tuple]:
        """(id, finished, train_s, trained) of every finished experiment, in the order they finished; `trained`:
        it ran in a sandbox (not answered from the ledger or refused before one)."""
        return [tuple(r) for r in self._all(
            f"SELECT id, finished, COALESCE(train_s, 0), reused_from IS NULL AND COALESCE(status, '') NOT IN "
            f"{NOT_A_RUN} FROM experiments WHERE state='done' ORDER BY finished, id")]

    def accepted_times(self) -> list[tuple]:
        """(created, val_bpb) of every acceptance, in order."""
        return [tuple(r) for r in self._all("SELECT created, val_bpb FROM accepted ORDER BY created, exp_id")]

    # -- what trackers are sent (arrl.track) -----------------------------------------------------------
    def final_experiments(self) -> list[sqlite3.Row]:
        """Finished experiments whose figures will not change: a candidate once scored (a suspicious one once
        its confirmation decided), a contended one, every confirmation; baselines once the noise is known (a
        contended baseline is re-run when its peers are in)."""
        base = "" if self.meta("noise") else " AND kind!='baseline'"
        return self._all("SELECT * FROM experiments WHERE state='done' AND (kind!='candidate' OR reward IS NOT NULL "
                         f"OR status='contended'){base} ORDER BY id")

    def test_score_rows(self) -> list[sqlite3.Row]:
        return self._all("SELECT * FROM test_scores ORDER BY exp_id") if self.has_table("test_scores") else []

    def events_of(self, kinds: tuple) -> list[sqlite3.Row]:
        return self._all(f"SELECT * FROM events WHERE kind IN ({', '.join('?' * len(kinds))}) ORDER BY id", kinds)

    def deliveries(self, sink: str) -> set[str]:
        """The keys `sink` was sent and holds (arrl.track.outbox)."""
        if not self.has_table("deliveries"):
            return set()
        return {r[0] for r in self._all("SELECT key FROM deliveries WHERE sink=?", (sink,))}

    # -- meta and schema ---------------------------------------------------------------------------
    def has_table(self, table: str) -> bool:
        return self._one("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)) is not None

    def columns(self, table: str) -> list[str]:
        return [c[1] for c in self._all(f"PRAGMA table_info({table})")]

    def meta(self, key: str, default=None):
        """A value of the run's meta table (JSON), or `default` where it was never written."""
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def all_meta(self) -> dict:
        return {k: json.loads(v) for k, v in self._all("SELECT key, value FROM meta")}
