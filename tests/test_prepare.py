"""Data preparation: determinism, the pinned corpus, the split, corruption detection."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from env import manifest, prepare, shakespeare


def test_preparation_is_deterministic(shakespeare_dir, tmp_path):
    again = tmp_path / "shakespeare"
    prepare.prepare("shakespeare", again)
    first, second = manifest.read(shakespeare_dir), manifest.read(again)
    assert first["files"] == second["files"]
    assert first["data_sha256"] == second["data_sha256"]
    assert manifest.env_hash(first) == manifest.env_hash(second)


def test_manifest_lists_every_shard_with_its_hash(shakespeare_dir):
    m = manifest.verify(shakespeare_dir, full=True)
    shards = sorted(p.relative_to(shakespeare_dir).as_posix() for p in shakespeare_dir.rglob("*.parquet"))
    assert shards == sorted(f for f in m["files"] if f.endswith(".parquet"))
    assert len([f for f in shards if f.startswith("train/")]) >= 2
    assert m["env_code_sha256"] == manifest.env_code_sha256()
    assert m["source"]["corpus_sha256"] == shakespeare.CORPUS_SHA256


def test_split_is_by_play_and_disjoint(shakespeare_dir):
    train = b"".join(bytes(r) for p in sorted((shakespeare_dir / "train").glob("*.parquet"))
                     for r in pq.read_table(p).column("tokens").to_pylist())
    val = [bytes(r) for r in pq.read_table(shakespeare_dir / "val" / "shard_00000.parquet").column("tokens").to_pylist()]
    assert len(val) == len(shakespeare.VAL_PLAYS)
    assert val[0].startswith(b"# Hamlet")
    for play in val:
        assert play[1000:1200] not in train


def test_corrupted_shard_is_detected(shakespeare_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(shakespeare_dir, copy)
    shard = copy / "train" / "shard_00001.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    manifest.verify(copy, full=False)  # same size: only the hash can tell
    with pytest.raises(manifest.DataError, match="shard_00001.parquet: sha256 mismatch"):
        manifest.verify(copy, full=True)


def test_missing_or_truncated_files_are_detected(shakespeare_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(shakespeare_dir, copy)
    (copy / "val" / "shard_00000.parquet").write_bytes(b"x")
    with pytest.raises(manifest.DataError, match="val/shard_00000.parquet: size"):
        manifest.verify(copy, full=False)
    (copy / "token_bytes.npy").unlink()
    with pytest.raises(manifest.DataError, match="token_bytes.npy: missing"):
        manifest.verify(copy, full=False)
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(manifest.DataError, match="unreadable manifest"):
        manifest.read(copy)


def test_env_hash_changes_with_env_code(shakespeare_dir):
    m = manifest.read(shakespeare_dir)
    assert manifest.env_hash(m) != manifest.env_hash(m, code_sha256="0" * 64)
    assert manifest.env_hash(m) != manifest.env_hash({**m, "data_sha256": "1" * 64})


def test_corpus_pin_is_enforced(monkeypatch):
    monkeypatch.setattr(shakespeare, "CORPUS_SHA256", "0" * 64)
    with pytest.raises(shakespeare.CorpusError, match="does not match the pinned"):
        shakespeare.plays()


def test_manifest_records_profile_constants(shakespeare_dir):
    m = json.loads((shakespeare_dir / "manifest.json").read_text())
    assert (m["profile"], m["vocab_size"], m["seq_len"], m["eval_tokens"]) == ("shakespeare", 256, 256, 16384)
