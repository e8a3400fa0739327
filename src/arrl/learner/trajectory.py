"""Trajectory batches: the learner's input, as Arrow record batches and as padded arrays.

A sample is one proposal with the reward of its experiment. `from_ledger` reads samples
from the run store into an Arrow `RecordBatch` (the form they travel in through the Ray
object store and are kept in, as Parquet, under runs/<name>/trajectories/). `collate` turns
one into the arrays a `LoraPolicyModule` consumes: prompts left-padded and responses
right-padded so every prompt ends at the same column, the behaviour logprobs the server
reported, the grammar masks (arrl.learner.grammar), and which response tokens are decisions (more
than one token allowed; a forced token has logprob 0 under any policy and carries nothing).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from arrl.learner.grammar import unpack, words

SCHEMA = pa.schema([
    ("exp_id", pa.int64()), ("proposal_id", pa.string()), ("group", pa.string()),
    ("adapter_version", pa.int64()), ("reward", pa.float64()), ("status", pa.string()),
    ("prompt_ids", pa.list_(pa.int32())), ("response_ids", pa.list_(pa.int32())),
    ("logprobs", pa.list_(pa.float32())), ("constraint", pa.string()),
    ("parent", pa.int64()),  # the experiment whose program the proposal edits
])


GROUPS = ("state", "parent", "incumbent")


def from_ledger(store, exp_ids: list[int], group_by: str = "state") -> pa.RecordBatch:
    """Samples of the given candidate experiments (each must have a reward and a learnable proposal).

    Each sample records its parent: the experiment whose program its proposal edits (the incumbent, or
    with `[search] strategy = "population"` the parent drawn from the archive). `group_by` says which
    samples share a baseline for group advantages: "state", proposals made from the same policy state
    (one request: the same parent, history and prompt), or "parent" ("incumbent" is its older name),
    every proposal made from the same parent (their rewards are all measured against it; the history
    lines of their prompts differ).
    """
    if group_by not in GROUPS:
        raise ValueError(f"group_by must be one of {', '.join(GROUPS)}, got {group_by!r}")
    cols = {f.name: [] for f in SCHEMA}
    for eid in exp_ids:
        row = store.sample_row(eid)
        rec = json.loads(row["record"])
        cols["exp_id"].append(row["id"])
        cols["proposal_id"].append(rec["id"])
        cols["group"].append(rec["state_key"] if group_by == "state" else f"{group_by}:{row['incumbent_id']}")
        cols["parent"].append(row["incumbent_id"])
        cols["adapter_version"].append(rec["adapter_version"])
        cols["reward"].append(row["reward"])
        cols["status"].append(row["status"])
        cols["prompt_ids"].append(rec["prompt_token_ids"])
        cols["response_ids"].append(rec["token_ids"])
        cols["logprobs"].append(rec["logprobs"])
        cols["constraint"].append(rec.get("constraint") or "")
    return pa.RecordBatch.from_pydict(cols, schema=SCHEMA)


def whole_groups(keys: list[str], size: int) -> list[int]:
    """Indices of a batch of whole groups: the groups in the order of their first row, each taken whole, until
    the batch holds `size` rows or more (so it may hold up to a group less one more), or every row while they
    hold fewer. A group split across batches would compare its members only with those in the same batch: the
    fast failures of a request with each other, before its slow runs finish (arrl.driver.learning)."""
    members: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        members.setdefault(k, []).append(i)
    out: list[int] = []
    for idx in members.values():
        out += idx
        if len(out) >= size:
            break
    return sorted(out)


def write_parquet(batch: pa.RecordBatch, directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.parquet"
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(pa.Table.from_batches([batch]), tmp)
    tmp.replace(path)
    return path


def read_parquet(directory: Path) -> pa.Table:
    files = sorted(Path(directory).glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else SCHEMA.empty_table()


def prompt_key(tokens) -> int:
    """A 63-bit key of a prompt's tokens: rows with equal keys share one prompt forward pass."""
    h = hashlib.blake2b(np.asarray(tokens, dtype=np.int32).tobytes(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


def collate(batch: pa.RecordBatch, masks: list, vocab_size: int, pad_id: int = 0) -> dict[str, np.ndarray]:
    """Padded arrays for the module; `masks[i]` is a (T_i, W) packed mask or None (unconstrained).

    Prompts are left-padded (every prompt ends at column P-1), responses right-padded; every
    array has one row per sample so RLlib can slice minibatches and shard across learners.
    """
    d = batch.to_pydict()
    n = batch.num_rows
    prompts, resps = d["prompt_ids"], d["response_ids"]
    p_len = max(len(p) for p in prompts)
    t_len = max(max(len(r) for r in resps), 1)
    w = words(vocab_size)
    pids = np.full((n, p_len), pad_id, dtype=np.int64)
    pmask = np.zeros((n, p_len), dtype=np.int64)
    resp = np.full((n, t_len), pad_id, dtype=np.int64)
    old = np.zeros((n, t_len), dtype=np.float32)
    valid = np.zeros((n, t_len), dtype=np.float32)
    decision = np.zeros((n, t_len), dtype=np.float32)
    packed = np.full((n, t_len, w), -1, dtype=np.int32)  # all bits set: every token allowed
    keys = np.zeros(n, dtype=np.int64)
    for i in range(n):
        p, r = prompts[i], resps[i]
        pids[i, p_len - len(p):] = p
        pmask[i, p_len - len(p):] = 1
        keys[i] = prompt_key(p)
        resp[i, :len(r)] = r
        old[i, :len(r)] = d["logprobs"][i]
        valid[i, :len(r)] = 1
        if masks[i] is not None:
            packed[i, :len(r)] = masks[i]
            decision[i, :len(r)] = unpack(masks[i], vocab_size).sum(-1) > 1
        else:
            decision[i, :len(r)] = 1
    return {"prompt_ids": pids, "prompt_mask": pmask, "prompt_key": keys, "response_ids": resp,
            "behaviour_logp": old, "valid": valid, "decision": decision, "masks": packed}
