"""The run store `runs/<name>/`: a transactional ledger plus per-experiment artifacts.

    runs/<name>/
      config.json          the resolved launch config (written once, checked on resume)
      ledger.sqlite        SQLite in WAL mode: every proposal, experiment, reward, acceptance,
                           policy version and event; a row is committed before it counts
      experiments/<id>/    train.py, diff, log tail, curve, outcome.json of each experiment
      trajectories/        the learner's input: one Parquet file per update (arrl.learner.trajectory)
      learner/             learner checkpoints ckpt-<version>/ (LoRA, value head, optimizer) and adapters
      git/                 a git repository whose branch arrl/<name> has one commit per accepted edit
      exports/             ledger.parquet tables and results.tsv (autoresearch's columns)
      STOP                 present when `arrl stop <name>` asked the driver to stop
      live.json            what the workers do now, for `arrl status --watch` (a view, not a record)
      wandb/               the W&B run's own files, with [track] wandb (arrl.track)

Experiments move pending -> running -> done. Everything the driver derives (incumbent,
noise, counters) is recomputed from `done` rows on resume, so a driver killed at any
moment loses nothing recorded and counts nothing twice; `running` rows of a dead driver
are reset to pending and re-run.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from arrl.ledger.queries import Queries

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS proposals (
    id TEXT PRIMARY KEY, created REAL NOT NULL, state_key TEXT, policy TEXT, adapter_version INTEGER,
    fmt TEXT, text TEXT, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS experiments (
    id INTEGER PRIMARY KEY, created REAL NOT NULL, kind TEXT NOT NULL,       -- baseline | candidate | confirm
    proposal_id TEXT, parent INTEGER, incumbent_id INTEGER, seed INTEGER NOT NULL,
    source_sha TEXT NOT NULL, norm_sha TEXT NOT NULL, summary TEXT, diff TEXT,
    state TEXT NOT NULL DEFAULT 'pending',                                   -- pending | running | done
    worker TEXT, attempts INTEGER NOT NULL DEFAULT 0, started REAL, finished REAL,
    status TEXT, val_bpb REAL, train_s REAL, wall_s REAL, peak_rss_mb REAL, message TEXT,
    reused_from INTEGER, reward REAL, outcome TEXT,
    steps INTEGER, tokens INTEGER, tokens_per_s REAL,                        -- throughput (arrl.driver.contention)
    cpu_s REAL, cpu_share REAL, cores TEXT,                                  -- CPU time got / (train wall x cores)
    foreign_share REAL,                                                      -- share of its cores others took
    island INTEGER);                                                         -- population: the parent's island
CREATE INDEX IF NOT EXISTS exp_norm ON experiments(norm_sha, state);
CREATE TABLE IF NOT EXISTS accepted (
    exp_id INTEGER PRIMARY KEY, created REAL NOT NULL, val_bpb REAL NOT NULL, prev_bpb REAL NOT NULL,
    commit_sha TEXT);
CREATE TABLE IF NOT EXISTS policy_versions (version INTEGER PRIMARY KEY, created REAL NOT NULL, info TEXT);
CREATE TABLE IF NOT EXISTS samples (                                         -- each learnable result, once
    exp_id INTEGER PRIMARY KEY, version INTEGER NOT NULL,                    -- the update that consumed it
    used INTEGER NOT NULL, staleness INTEGER);                               -- used=0: dropped (stale/invalid)
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, t REAL NOT NULL, kind TEXT NOT NULL, data TEXT);
CREATE TABLE IF NOT EXISTS test_scores (                                     -- the sealed test split: never read
    exp_id INTEGER PRIMARY KEY, incumbent_id INTEGER NOT NULL,               -- for reward, acceptance or abort
    created REAL NOT NULL, status TEXT NOT NULL, test_bpb REAL, message TEXT);
CREATE TABLE IF NOT EXISTS archive (                                         -- [search] strategy = population
    norm_sha TEXT NOT NULL, island INTEGER NOT NULL, exp_id INTEGER NOT NULL,  -- the program's first run
    niche TEXT NOT NULL, descriptors TEXT NOT NULL, via TEXT NOT NULL,       -- start | trained | migrated
    created REAL NOT NULL, PRIMARY KEY (norm_sha, island));
CREATE TABLE IF NOT EXISTS deliveries (                                      -- [track]: what each tracker holds
    sink TEXT NOT NULL, key TEXT NOT NULL, t REAL NOT NULL, PRIMARY KEY (sink, key));
"""

EXP_FIELDS = ("status", "val_bpb", "train_s", "wall_s", "peak_rss_mb", "message", "reward", "outcome", "steps",
              "tokens", "tokens_per_s", "cpu_s", "cpu_share", "cores", "foreign_share")
# columns added since the first ledgers: a resumed old run gets them (empty) when it is opened
ADDED_COLUMNS = {"experiments": (("steps", "INTEGER"), ("tokens", "INTEGER"), ("tokens_per_s", "REAL"),
                                 ("cpu_s", "REAL"), ("cpu_share", "REAL"), ("cores", "TEXT"),
                                 ("foreign_share", "REAL"), ("island", "INTEGER"))}


class StoreError(Exception):
    """The run directory or its ledger is unusable; the message names the file."""


class Store(Queries):
    def __init__(self, root: Path):
        self.root = Path(root)
        self.db_path = self.root / "ledger.sqlite"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / "experiments").mkdir(exist_ok=True)
            self.db = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=30)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
            self._migrate()
            self.db.execute("PRAGMA quick_check").fetchone()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.db_path}: the ledger is unreadable ({e}); it was left untouched") from None
        except OSError as e:
            raise StoreError(f"{self.root}: cannot use the run directory ({e.strerror})") from None

    def _migrate(self) -> None:
        for table, cols in ADDED_COLUMNS.items():
            have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
            for name, kind in cols:
                if name not in have:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    # -- transactions ------------------------------------------------------------------------
    def tx(self):
        return _Tx(self.db)

    def close(self) -> None:
        self.db.close()

    # -- meta / config ---------------------------------------------------------------------------
    def get(self, key: str, default=None):
        return self.meta(key, default)

    def put(self, key: str, value) -> None:
        self.db.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                        (key, json.dumps(value)))

    def event(self, kind: str, **data) -> None:
        self.db.execute("INSERT INTO events(t, kind, data) VALUES(?, ?, ?)", (time.time(), kind, json.dumps(data)))

    # -- deliveries to trackers (arrl.track) --------------------------------------------------------
    def delivered(self, sink: str, keys) -> None:
        """`keys` reached `sink` (a tracker, the webhook); a key already recorded stays as it was."""
        now = time.time()
        self.db.executemany("INSERT OR IGNORE INTO deliveries(sink, key, t) VALUES(?, ?, ?)",
                            [(sink, k, now) for k in keys])

    def undelivered(self, sink: str, keys) -> None:
        """`keys` are recorded as delivered but `sink` does not hold them (writes it lost when it died)."""
        self.db.executemany("DELETE FROM deliveries WHERE sink=? AND key=?", [(sink, k) for k in keys])

    # -- proposals ---------------------------------------------------------------------------
    def add_proposal(self, record: dict) -> None:
        self.db.execute("INSERT OR IGNORE INTO proposals(id, created, state_key, policy, adapter_version, fmt, text, "
                        "record) VALUES(?,?,?,?,?,?,?,?)",
                        (record["id"], time.time(), record.get("state_key"), record.get("policy"),
                         record.get("adapter_version"), record.get("fmt"), record.get("text"), json.dumps(record)))

    # -- experiments -------------------------------------------------------------------------
    def add_experiment(self, kind: str, seed: int, source_sha: str, norm_sha: str, proposal_id: str | None = None,
                       parent: int | None = None, incumbent_id: int | None = None, summary: str = "",
                       diff: str = "", island: int | None = None) -> int:
        """A pending experiment. `incumbent_id` is the experiment whose program it edits (the incumbent; with
        `[search] strategy = population`, the parent drawn from the archive on `island`)."""
        cur = self.db.execute(
            "INSERT INTO experiments(created, kind, proposal_id, parent, incumbent_id, seed, source_sha, norm_sha, "
            "summary, diff, island) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
            (time.time(), kind, proposal_id, parent, incumbent_id, seed, source_sha, norm_sha, summary, diff,
             island))
        return cur.lastrowid

    def mark_running(self, exp_id: int, worker: str) -> None:
        self.db.execute("UPDATE experiments SET state='running', worker=?, started=?, attempts=attempts+1 "
                        "WHERE id=? AND state!='done'", (worker, time.time(), exp_id))

    def requeue(self, exp_id: int) -> bool:
        """A running experiment goes back to pending (it runs again); False if it was not running."""
        return self.db.execute("UPDATE experiments SET state='pending', worker=NULL WHERE id=? AND state='running'",
                               (exp_id,)).rowcount == 1

    def redo(self, exp_id: int) -> bool:
        """A finished experiment is cleared and goes back to pending (a baseline found contended once its
        peers were in); its result lives on in a `contended` event and its experiment folder."""
        return self.db.execute("UPDATE experiments SET state='pending', worker=NULL, status=NULL, val_bpb=NULL, "
                               "reward=NULL, message=NULL WHERE id=? AND state='done'", (exp_id,)).rowcount == 1

    def test_scored(self) -> set[int]:
        """Experiments whose model has a test-split score (read only to avoid scoring twice)."""
        return {r[0] for r in self.db.execute("SELECT exp_id FROM test_scores")}

    def finish(self, exp_id: int, **fields) -> bool:
        """Record an experiment's result once; returns False if it was already done (not counted twice)."""
        bad = set(fields) - set(EXP_FIELDS) - {"reused_from"}
        if bad:
            raise ValueError(f"unknown experiment fields {sorted(bad)}")
        cols = ", ".join(f"{k}=?" for k in fields)
        cur = self.db.execute(f"UPDATE experiments SET state='done', finished=?, {cols} WHERE id=? AND state!='done'",
                              (time.time(), *[json.dumps(v) if k == "outcome" else v for k, v in fields.items()],
                               exp_id))
        return cur.rowcount == 1

    def rescore(self, exp_id: int, status: str, reward: float | None, message: str | None) -> None:
        """A finished candidate's status and reward, derived again on resume (the message kept unless given)."""
        self.db.execute("UPDATE experiments SET status=?, reward=?, message=COALESCE(?, message) WHERE id=?",
                        (status, reward, message, exp_id))

    def resolve_suspicious(self, exp_id: int, status: str, reward: float, message: str) -> bool:
        """A suspicious candidate's verdict once its confirmation is in (once: False if already resolved)."""
        return self.db.execute("UPDATE experiments SET status=?, reward=?, message=? WHERE id=? AND reward IS NULL",
                               (status, reward, message, exp_id)).rowcount == 1

    def requeue_running(self) -> list[int]:
        """After a driver crash: running rows go back to pending (their results never arrived)."""
        ids = [r[0] for r in self.db.execute("SELECT id FROM experiments WHERE state='running'")]
        self.db.execute("UPDATE experiments SET state='pending', worker=NULL WHERE state='running'")
        return ids

    def experiments(self) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM experiments ORDER BY id").fetchall()

    def done_with_norm(self, norm_sha: str) -> sqlite3.Row | None:
        """The first finished, non-reused run of the same normalised source (for de-duplication); a run that
        stayed `contended` measured nothing and answers nothing."""
        return self.db.execute("SELECT * FROM experiments WHERE norm_sha=? AND state='done' AND reused_from IS NULL "
                               "AND status IS NOT NULL AND status!='contended' AND kind!='baseline' ORDER BY id LIMIT 1",
                               (norm_sha,)).fetchone()

    # -- acceptance / policy versions -------------------------------------------------------------
    def add_program(self, norm_sha: str, island: int, exp_id: int, niche: list, descriptors: dict,
                    via: str) -> bool:
        """A program joins an island of the archive (once per island); False when it is there already."""
        return self.db.execute(
            "INSERT OR IGNORE INTO archive(norm_sha, island, exp_id, niche, descriptors, via, created) "
            "VALUES(?,?,?,?,?,?,?)", (norm_sha, island, exp_id, json.dumps(niche), json.dumps(descriptors), via,
                                      time.time())).rowcount == 1

    def accept(self, exp_id: int, val_bpb: float, prev_bpb: float) -> None:
        self.db.execute("INSERT OR IGNORE INTO accepted(exp_id, created, val_bpb, prev_bpb) VALUES(?,?,?,?)",
                        (exp_id, time.time(), val_bpb, prev_bpb))

    def add_test_score(self, exp_id: int, incumbent_id: int, status: str, test_bpb: float | None,
                       message: str = "") -> None:
        """The sealed test split's score of one run's model (once). Nothing that decides a reward,
        an acceptance or an abort reads this table."""
        self.db.execute("INSERT OR IGNORE INTO test_scores(exp_id, incumbent_id, created, status, test_bpb, message) "
                        "VALUES(?,?,?,?,?,?)", (exp_id, incumbent_id, time.time(), status, test_bpb, message[:1000]))

    def set_commit(self, exp_id: int, sha: str) -> None:
        self.db.execute("UPDATE accepted SET commit_sha=? WHERE exp_id=?", (sha, exp_id))

    def accepted(self) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM accepted ORDER BY created, exp_id").fetchall()

    def record_samples(self, rows: list[tuple]) -> None:
        """(exp id, version, used, staleness) per result an update consumed or dropped (each once)."""
        self.db.executemany("INSERT OR IGNORE INTO samples(exp_id, version, used, staleness) VALUES(?,?,?,?)", rows)

    def add_policy_version(self, version: int, **info) -> None:
        self.db.execute("INSERT OR IGNORE INTO policy_versions(version, created, info) VALUES(?,?,?)",
                        (version, time.time(), json.dumps(info)))

    def update_policy_version(self, version: int, **info) -> None:
        row = self.db.execute("SELECT info FROM policy_versions WHERE version=?", (version,)).fetchone()
        if row is not None:
            self.db.execute("UPDATE policy_versions SET info=? WHERE version=?",
                            (json.dumps({**json.loads(row[0]), **info}), version))

    def policy_version(self) -> int:
        return self.db.execute("SELECT COALESCE(MAX(version), 0) FROM policy_versions").fetchone()[0]

    # -- artifacts ---------------------------------------------------------------------------
    def exp_dir(self, exp_id: int) -> Path:
        d = self.root / "experiments" / f"{exp_id:06d}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def write_source(self, exp_id: int, source: str, diff: str | None = None) -> None:
        """An experiment's train.py (and diff.patch), written whole (temp file, then rename). Call it inside
        the transaction that adds the experiment, so no committed row lacks its script: a driver killed before
        the commit leaves an orphan folder that the next experiment with that id overwrites."""
        d = self.exp_dir(exp_id)
        for name, text in (("train.py", source), ("diff.patch", diff)):
            if text is None:
                (d / name).unlink(missing_ok=True)  # an orphan's, from a driver killed before its commit
                continue
            tmp = d / f".{name}.tmp"
            tmp.write_text(text)
            tmp.replace(d / name)


class _Tx:
    """`with store.tx():` one IMMEDIATE transaction: all or nothing, durable on exit."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, exc_type, *_):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        return False
