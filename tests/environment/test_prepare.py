"""Data preparation: determinism, the pinned corpus, the three splits, corruption detection;
and the tokens the loader serves, as the progress protocol reports them."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from env import loader, manifest, prepare, progress, shakespeare


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
    assert "val/shard_00000.parquet" in shards and "test/shard_00000.parquet" in shards
    assert m["env_code_sha256"] == manifest.env_code_sha256()
    assert m["source"]["corpus_sha256"] == shakespeare.CORPUS_SHA256


def _docs(folder) -> list[bytes]:
    return [bytes(r) for p in sorted(folder.glob("*.parquet")) for r in pq.read_table(p).column("tokens").to_pylist()]


def test_split_is_by_play_and_disjoint(shakespeare_dir):
    train, val, test = (_docs(shakespeare_dir / s) for s in ("train", "val", "test"))
    assert len(val) == len(shakespeare.VAL_PLAYS) and len(test) == len(shakespeare.TEST_PLAYS)
    assert val[0].startswith(b"# Hamlet") and test[0].startswith(b"# Macbeth")
    assert len(train) == 38 - 4
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    joined = {"train": b"".join(train), "val": b"".join(val), "test": b"".join(test)}
    for name, docs in (("val", val), ("test", test)):
        for play in docs:  # no passage of a held-out play appears in any other split
            for other in set(joined) - {name}:
                assert play[1000:1200] not in joined[other], (name, other)


def test_split_is_deterministic_and_keeps_the_training_set_large():
    texts = shakespeare.plays()
    first, second = shakespeare.split(texts), shakespeare.split(dict(reversed(list(texts.items()))))
    assert first == second  # the split does not depend on the order the plays come in
    train, val, test = first
    assert not set(shakespeare.VAL_PLAYS) & set(shakespeare.TEST_PLAYS)
    assert set(shakespeare.VAL_PLAYS) | set(shakespeare.TEST_PLAYS) <= set(texts)
    assert (len(train), len(val), len(test)) == (34, 2, 2)
    assert sum(map(len, train)) > 0.85 * sum(map(len, texts.values()))


def _flipped_copy(data_dir, tmp_path, shard_name: str, where: float, mask: int):
    """A copy of the prepared data with one byte of one shard flipped (same size: only the hash can tell)."""
    copy = tmp_path / "copy"
    shutil.copytree(data_dir, copy)
    shard = copy / shard_name
    data = bytearray(shard.read_bytes())
    data[int(len(data) * where)] ^= mask
    shard.write_bytes(bytes(data))
    return copy, shard


def test_corrupted_shard_is_detected(shakespeare_dir, tmp_path):
    copy, _ = _flipped_copy(shakespeare_dir, tmp_path, "train/shard_00001.parquet", 1 / 2, 0xFF)
    manifest.verify(copy, full=False)  # same size: only the hash can tell
    with pytest.raises(manifest.DataError, match="shard_00001.parquet: sha256 mismatch"):
        manifest.verify(copy, full=True)


def test_corrupted_test_shard_is_detected(shakespeare_dir, tmp_path):
    copy, shard = _flipped_copy(shakespeare_dir, tmp_path, "test/shard_00000.parquet", 1 / 3, 0x01)
    manifest.verify(copy, only="val/")
    with pytest.raises(manifest.DataError, match="test/shard_00000.parquet: sha256 mismatch"):
        manifest.verify(copy, only="test/")
    shard.unlink()
    with pytest.raises(manifest.DataError, match="test/shard_00000.parquet: missing"):
        manifest.verify(copy, full=False)


def test_has_test_split_tells_old_preparations_apart(shakespeare_dir):
    m = manifest.read(shakespeare_dir)
    assert manifest.has_test_split(m)
    # what the code before the test split wrote: no test files, no test_eval_tokens / test_tokens
    old = {k: v for k, v in m.items() if k not in ("test_eval_tokens", "test_tokens")}
    old["files"] = {f: v for f, v in m["files"].items() if not f.startswith("test/")}
    assert not manifest.has_test_split(old)
    assert not manifest.has_test_split({**m, "test_eval_tokens": None})
    assert not manifest.has_test_split({**m, "test_eval_tokens": "16384"})
    assert not manifest.has_test_split({**m, "files": old["files"]})
    assert not manifest.has_test_split([])


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
    texts = shakespeare.plays()
    assert m["val_tokens"] == sum(len(texts[p].encode()) for p in shakespeare.VAL_PLAYS)
    assert m["test_tokens"] == sum(len(texts[p].encode()) for p in shakespeare.TEST_PLAYS)
    assert m["test_eval_tokens"] == 16384
    assert m["source"]["test_plays"] == list(shakespeare.TEST_PLAYS)


def test_progress_records_carry_the_tokens_the_loader_served(shakespeare_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "_tokens_served", 0)  # count from a fresh process's zero
    path = tmp_path / "progress.jsonl"
    run = progress.Run(path, budget_s=60.0)
    run.report(0, 5.0)  # nothing served yet: no tokens field
    data = loader.batches(4, 256, seed=0, data_dir=shakespeare_dir)
    for step in range(1, 4):
        x, y = next(data)
        assert x.shape == (4, 256)
        run.report(step, 5.0 - step)
    other = loader.batches(2, 128, seed=1, data_dir=shakespeare_dir)  # every iterator of the process counts
    next(other)
    run.report(4, 1.0)
    run.finish()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    steps = [r for r in records if r["event"] == "step"]
    assert "tokens" not in steps[0]
    assert [r["tokens"] for r in steps[1:]] == [1024, 2048, 3072, 3072 + 256]
    prog = progress.read(path)
    assert [p.tokens for p in prog.curve] == [None, 1024, 2048, 3072, 3328]
    assert [p.step for p in prog.curve] == [0, 1, 2, 3, 4]
    assert prog.tokens == 3328 == loader.tokens_served()


def test_progress_reader_tolerates_malformed_tokens(tmp_path):
    path = tmp_path / "progress.jsonl"
    bad = ['"1024"', "-5", "1.5", "true", "null", "[1]", '{"n": 1}', "1e400", "NaN", str(2**63), "9" * 4000]
    lines = [json.dumps({"event": "start", "time": 1.0, "budget_s": 30})]
    lines += [f'{{"event": "step", "elapsed": {i}, "step": {i}, "train_loss": 2.0, "tokens": {t}}}'
              for i, t in enumerate(bad)]
    lines.append('{"event": "step", "elapsed": 1' + "0" * 400 + ', "step": 99, "train_loss": 1.0, "tokens": 5}')
    lines.append("[" * 100_000)
    lines.append(json.dumps({"event": "step", "elapsed": 20.0, "step": 20, "train_loss": 1.5, "tokens": 4096}))
    lines.append(json.dumps({"event": "step", "elapsed": 21.0, "step": 21, "train_loss": 1.4}))
    path.write_text("\n".join(lines) + "\n")
    prog = progress.read(path)
    assert [p.step for p in prog.curve] == [*range(len(bad)), 20, 21]  # every point kept, the garbage lines skipped
    assert [p.tokens for p in prog.curve] == [None] * len(bad) + [4096, None]
    assert prog.tokens is None  # the last point reported none
    assert progress.Progress(None, None, None, prog.curve[:-1]).tokens == 4096
    assert progress.Progress(None, None, None, []).tokens is None
