"""The web profile's download path, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import webserver

from env import manifest, tokenizer, web


def test_prepare_web_end_to_end(web_dir, web_fixture):
    served, _ = web_fixture
    m = manifest.verify(web_dir, full=True)
    assert m["profile"] == "web" and m["vocab_size"] == 8192
    sums = dict(line.split()[::-1] for line in (served / "SHA256SUMS").read_text().splitlines())
    assert m["source"]["raw_sha256"] == sums  # every downloaded shard verified and recorded
    bpe = tokenizer.BPE(web_dir / "tokenizer.json")
    assert 256 < bpe.vocab_size <= 8192
    text = "The quiet river ran south."
    ids = next(bpe.encode_docs([text]))
    assert ids[0] == bpe.bos_id and bpe.decode(ids) == text
    token_bytes = np.load(web_dir / "token_bytes.npy")
    assert token_bytes[bpe.bos_id] == 0
    assert sum(token_bytes[i] for i in ids[1:]) == len(text.encode())


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
    src = lambda url: web.Source(base_url=url, train_shards=1, val_index=9)  # noqa: E731
    with webserver.serve(served, faults={"shard_00000.parquet": ["garbage"]}) as url:
        with pytest.raises(web.DownloadError, match="shard_00000.parquet: sha256"):
            web.fetch_all(src(url), tmp_path, progress=False)
    with webserver.serve(served) as url:  # a clean retry of the same command succeeds
        got = web.fetch_all(src(url), tmp_path, progress=False)
    assert set(got) == {"shard_00000.parquet", "shard_00009.parquet"}


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
