"""The web profile's download path, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow.parquet as pq
import pytest
import webserver

from env import manifest, tokenizer, web


def test_prepare_web_end_to_end(web_dir, web_fixture):
    served, _ = web_fixture
    m = manifest.verify(web_dir, full=True)
    assert m["profile"] == "web" and m["vocab_size"] == 8192
    sums = dict(line.split()[::-1] for line in (served / "SHA256SUMS").read_text().splitlines())
    assert m["source"]["raw_sha256"] == sums  # every downloaded shard verified and recorded
    assert (m["source"]["val_shard"], m["source"]["test_shard"]) == ("shard_00009.parquet", "shard_00008.parquet")
    bpe = tokenizer.BPE(web_dir / "tokenizer.json")
    assert 256 < bpe.vocab_size <= 8192
    text = "The quiet river ran south."
    ids = next(bpe.encode_docs([text]))
    assert ids[0] == bpe.bos_id and bpe.decode(ids) == text
    token_bytes = np.load(web_dir / "token_bytes.npy")
    assert token_bytes[bpe.bos_id] == 0
    assert sum(token_bytes[i] for i in ids[1:]) == len(text.encode())


def test_web_splits_are_disjoint_and_listed(web_dir):
    m = manifest.read(web_dir)
    assert manifest.has_test_split(m)
    docs = {split: [tuple(r) for p in sorted((web_dir / split).glob("*.parquet"))
                    for r in pq.read_table(p).column("tokens").to_pylist()] for split in ("train", "val", "test")}
    assert all(docs.values())
    assert not set(docs["train"]) & set(docs["val"]) and not set(docs["train"]) & set(docs["test"])
    assert not set(docs["val"]) & set(docs["test"])
    assert m["test_tokens"] == sum(map(len, docs["test"])) and m["val_tokens"] == sum(map(len, docs["val"]))
    usable = (m["test_tokens"] - 1) // m["seq_len"] * m["seq_len"]
    assert m["test_eval_tokens"] == min(2**20, usable) >= m["seq_len"]
    assert [f for f in m["files"] if f.startswith("test/")] == ["test/shard_00000.parquet"]


def test_source_shards_must_be_disjoint():
    assert web.Source().test_index == web.DEFAULT_TEST_INDEX == web.DEFAULT_VAL_INDEX - 1
    assert web.Source(val_index=9).test_index == 8 and web.Source(val_index=9, test_index=3).test_index == 3
    assert web.Source(val_index=9).test_name() == "shard_00008.parquet"
    web.Source(train_shards=2, val_index=9).check()
    for src, msg in [(web.Source(train_shards=9, val_index=9), "test shard 8 is one of the 9 training"),
                     (web.Source(train_shards=2, val_index=1), "validation shard 1 is one of"),
                     (web.Source(train_shards=2, val_index=9, test_index=9), "same shard"),
                     (web.Source(train_shards=2, val_index=0), ">= 0")]:
        with pytest.raises(web.DownloadError, match=msg):
            src.check()


def test_download_resumes_a_partial_file(web_fixture, tmp_path):
    served, _ = web_fixture
    name = "shard_00000.parquet"
    full = (served / name).read_bytes()
    (tmp_path / (name + ".part")).write_bytes(full[:1000])
    log = []
    with webserver.serve(served, log=log) as url:
        digest = web.download(f"{url}/{name}", tmp_path / name, hashlib.sha256(full).hexdigest(), progress=False)
    assert log == [(name, "bytes=1000-")]
    assert (tmp_path / name).read_bytes() == full and digest == hashlib.sha256(full).hexdigest()


def test_download_retries_server_errors_and_dropped_connections(web_fixture, tmp_path):
    served, _ = web_fixture
    name = "shard_00001.parquet"
    log = []
    with webserver.serve(served, faults={name: ["503", "cut"]}, log=log) as url:
        web.download(f"{url}/{name}", tmp_path / name, progress=False, backoff_s=0.01)
    assert (tmp_path / name).read_bytes() == (served / name).read_bytes()
    assert [r for _, r in log][:2] == [None, None] and log[2][1] is not None  # the third resumes


def test_checksum_mismatch_is_an_error(web_fixture, tmp_path):
    served, _ = web_fixture
    with webserver.serve(served) as url:
        with pytest.raises(web.DownloadError, match="does not match"):
            web.download(f"{url}/shard_00000.parquet", tmp_path / "s.parquet", "0" * 64, progress=False)
    assert not (tmp_path / "s.parquet").exists() and not (tmp_path / "s.parquet.part").exists()


def test_fetch_all_verifies_against_sha256sums(web_fixture, tmp_path):
    served, _ = web_fixture
    src = lambda url: web.Source(base_url=url, train_shards=1, val_index=9)  # noqa: E731  (test shard: 8)
    with webserver.serve(served, faults={"shard_00000.parquet": ["garbage"]}) as url:
        with pytest.raises(web.DownloadError, match="shard_00000.parquet: sha256"):
            web.fetch_all(src(url), tmp_path, progress=False)
    with webserver.serve(served) as url:  # a clean retry of the same command succeeds
        got = web.fetch_all(src(url), tmp_path, progress=False)
    assert set(got) == {"shard_00000.parquet", "shard_00008.parquet", "shard_00009.parquet"}


def test_missing_shard_and_unreachable_server_fail_clearly(web_fixture, tmp_path):
    served, _ = web_fixture
    with webserver.serve(served) as url:
        with pytest.raises(web.DownloadError, match="HTTP 404"):
            web.download(f"{url}/nope.parquet", tmp_path / "n.parquet", progress=False)
    with pytest.raises(web.DownloadError, match="failed after 2 attempts"):
        web.download("http://127.0.0.1:9/x.parquet", tmp_path / "x.parquet", retries=1, backoff_s=0.01,
                     progress=False)


def test_not_parquet_is_rejected(tmp_path):
    (tmp_path / "junk.parquet").write_bytes(b"hello")
    with webserver.serve(tmp_path) as url:
        with pytest.raises(web.DownloadError, match="not a readable Parquet"):
            web.download(f"{url}/junk.parquet", tmp_path / "out.parquet", progress=False)


def test_prepare_command_takes_a_test_index(web_fixture, tmp_path, capsys):
    from env import prepare

    _, url = web_fixture
    args = ["--profile", "web", "--base-url", url, "--shards", "2", "--val-index", "9", "--tokenizer-max-chars",
            "100000"]
    assert prepare.main([*args, "--data-dir", str(tmp_path / "a"), "--test-index", "8"]) == 0
    m = manifest.verify(tmp_path / "a")
    assert m["source"]["test_shard"] == "shard_00008.parquet" and manifest.has_test_split(m)
    assert "test_eval_tokens" in capsys.readouterr().out
    assert prepare.main([*args, "--data-dir", str(tmp_path / "b"), "--test-index", "1"]) == 2
    assert "test shard 1 is one of the 2 training shards" in capsys.readouterr().err
    assert not (tmp_path / "b" / "manifest.json").exists()
