"""Data preparation: corpus -> tokenized Parquet shards + manifest, per profile.

Layout of a prepared profile directory:
    train/shard_00000.parquet ...   training documents, column `tokens` (list<uint16>)
    val/shard_00000.parquet         validation documents (never visible to training)
    test/shard_00000.parquet        test documents: the sealed split, disjoint from train and val
    token_bytes.npy                 UTF-8 bytes per token id (for bits per byte)
    tokenizer.json                  the BPE (web profile only)
    raw/                            downloaded source shards (web profile only, not hashed)
    manifest.json                   sha256 of every file above, env code hash, constants

Preparation is deterministic: the same corpus and env code give the same hashes.
Run as `python -m env.prepare --profile shakespeare --data-dir DIR`.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import shutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from env import manifest, profiles, shakespeare, tokenizer, web

TRAIN_SHARD_TOKENS = 1 << 20  # documents are grouped into shards of about this many tokens
ROW_GROUP_ROWS = 256


def _write_shard(path: Path, docs: list[np.ndarray]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    offsets = np.zeros(len(docs) + 1, dtype=np.int32)
    np.cumsum([len(d) for d in docs], out=offsets[1:])
    values = np.concatenate(docs).astype(np.uint16) if docs else np.zeros(0, np.uint16)
    tokens = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
    table = pa.table({"tokens": tokens})
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()  # write then rename: a shard on disk is always complete
    pq.write_table(table, buf, compression="zstd", row_group_size=ROW_GROUP_ROWS, write_statistics=False)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


def _write_sharded(out_dir: Path, docs: Iterable[np.ndarray], shard_tokens: int) -> list[Path]:
    paths, batch, size = [], [], 0
    for doc in docs:
        batch.append(doc)
        size += len(doc)
        if size >= shard_tokens:
            paths.append(out_dir / f"shard_{len(paths):05d}.parquet")
            _write_shard(paths[-1], batch)
            batch, size = [], 0
    if batch or not paths:
        paths.append(out_dir / f"shard_{len(paths):05d}.parquet")
        _write_shard(paths[-1], batch)
    return paths


def _eval_tokens(profile: profiles.Profile, n: int, what: str) -> int:
    """Tokens scored on a split of `n` tokens: whole windows of targets, at most profile.eval_tokens."""
    usable = (max(n - 1, 0) // profile.seq_len) * profile.seq_len
    eval_tokens = min(profile.eval_tokens, usable)
    if eval_tokens < profile.seq_len:
        raise manifest.DataError(f"{what} split has {n} tokens, fewer than one window of {profile.seq_len}")
    return eval_tokens


def _finish(data_dir: Path, profile: profiles.Profile, written: list[Path], meta: dict, n_val: int,
            n_test: int) -> dict:
    meta = {
        "profile": profile.name,
        "vocab_size": profile.vocab_size,
        "seq_len": profile.seq_len,
        "eval_tokens": _eval_tokens(profile, n_val, "validation"),
        "eval_batch": profile.eval_batch,
        "val_tokens": n_val,
        "test_eval_tokens": _eval_tokens(profile, n_test, "test"),
        "test_tokens": n_test,
        **meta,
    }
    return manifest.write(data_dir, meta, [p.relative_to(data_dir).as_posix() for p in written])


def _clean(data_dir: Path) -> None:
    for sub in ("train", "val", "test"):
        shutil.rmtree(data_dir / sub, ignore_errors=True)


def prepare_shakespeare(data_dir: Path) -> dict:
    profile = profiles.SHAKESPEARE
    train, val, test = shakespeare.split(shakespeare.plays())
    _clean(data_dir)
    as_bytes = lambda docs: (np.frombuffer(d.encode("utf-8"), dtype=np.uint8) for d in docs)  # noqa: E731
    written = _write_sharded(data_dir / "train", as_bytes(train), TRAIN_SHARD_TOKENS)
    written += _write_sharded(data_dir / "val", as_bytes(val), 1 << 62)
    written += _write_sharded(data_dir / "test", as_bytes(test), 1 << 62)
    np.save(data_dir / "token_bytes.npy", tokenizer.byte_token_bytes())
    written.append(data_dir / "token_bytes.npy")
    n_val = sum(len(d.encode("utf-8")) for d in val)
    n_test = sum(len(d.encode("utf-8")) for d in test)
    source = {"package": f"{shakespeare.PACKAGE}=={shakespeare.VERSION}", "corpus_sha256": shakespeare.CORPUS_SHA256,
              "val_plays": list(shakespeare.VAL_PLAYS), "test_plays": list(shakespeare.TEST_PLAYS)}
    return _finish(data_dir, profile, written, {"source": source}, n_val, n_test)


def _texts(paths: list[Path], max_chars: int | None = None) -> Iterator[str]:
    import pyarrow.parquet as pq

    seen = 0
    for path in paths:
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(columns=[web.TEXT_COLUMN], batch_size=1024):
            for text in batch.column(0).to_pylist():
                if text is None:
                    continue
                if max_chars is not None and seen >= max_chars:
                    return
                seen += len(text)
                yield text


def _tokenized(bpe: tokenizer.BPE, paths: list[Path], batch: int = 1024) -> Iterator[np.ndarray]:
    buf = []
    for text in _texts(paths):
        buf.append(text)
        if len(buf) == batch:
            yield from (np.asarray(ids, dtype=np.uint16) for ids in bpe.encode_docs(buf))
            buf = []
    if buf:
        yield from (np.asarray(ids, dtype=np.uint16) for ids in bpe.encode_docs(buf))


def prepare_web(data_dir: Path, source: web.Source, tokenizer_max_chars: int = 250_000_000,
                shard_tokens: int = 50_000_000, progress: bool = True) -> dict:
    from tqdm import tqdm

    profile = profiles.WEB
    raw_dir = data_dir / "raw"
    raw_sums = web.fetch_all(source, raw_dir, progress=progress)
    train_raw = [raw_dir / n for n in source.train_names()]
    val_raw = [raw_dir / source.val_name()]
    test_raw = [raw_dir / source.test_name()]

    if progress:
        print(f"training a BPE tokenizer (vocab {profile.vocab_size}) on up to {tokenizer_max_chars:,} chars",
              file=sys.stderr)
    tok_path = data_dir / "tokenizer.json"
    tokenizer.train_bpe(_texts(train_raw, tokenizer_max_chars), profile.vocab_size, tok_path)
    bpe = tokenizer.BPE(tok_path)
    np.save(data_dir / "token_bytes.npy", bpe.token_bytes(profile.vocab_size))

    _clean(data_dir)
    docs = tqdm(_tokenized(bpe, train_raw), desc="tokenizing train", unit="doc", disable=not progress,
                file=sys.stderr)
    written = _write_sharded(data_dir / "train", docs, shard_tokens)
    val_docs = list(_tokenized(bpe, val_raw))
    written += _write_sharded(data_dir / "val", val_docs, 1 << 62)
    test_docs = list(_tokenized(bpe, test_raw))
    written += _write_sharded(data_dir / "test", test_docs, 1 << 62)
    written += [tok_path, data_dir / "token_bytes.npy"]
    meta = {"source": {"base_url": source.base_url, "raw_sha256": raw_sums, "tokenizer_max_chars": tokenizer_max_chars,
                       "val_shard": source.val_name(), "test_shard": source.test_name()},
            "tokenizer_vocab": bpe.vocab_size}
    return _finish(data_dir, profile, written, meta, sum(len(d) for d in val_docs), sum(len(d) for d in test_docs))


def prepare(profile: str, data_dir: Path, source: web.Source | None = None, progress: bool = True,
            test_index: int | None = None, **kw) -> dict:
    """Prepare `profile` in `data_dir`; returns the manifest.

    web: `source` says where the shards come from; `test_index`, when given, overrides its
    test shard (default: `source.test_index`, the shard just before the validation shard).
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    if profile == "shakespeare":
        return prepare_shakespeare(data_dir)
    if profile == "web":
        source = source or web.Source()
        if test_index is not None:
            source = dataclasses.replace(source, test_index=test_index)
        return prepare_web(data_dir, source, progress=progress, **kw)
    profiles.get(profile)  # raises with the list of known profiles
    raise AssertionError(profile)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m env.prepare", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="shakespeare", choices=sorted(profiles.PROFILES))
    ap.add_argument("--data-dir", required=True, type=Path, help="directory of this profile's prepared data")
    ap.add_argument("--base-url", default=web.DEFAULT_BASE_URL, help="web: where the Parquet shards are served")
    ap.add_argument("--shards", type=int, default=8, help="web: number of training shards to download")
    ap.add_argument("--val-index", type=int, default=web.DEFAULT_VAL_INDEX, help="web: index of the validation shard")
    ap.add_argument("--test-index", type=int, default=None,
                    help="web: index of the sealed test shard (default: the one before --val-index)")
    ap.add_argument("--tokenizer-max-chars", type=int, default=250_000_000, help="web: characters to train the BPE on")
    ap.add_argument("--verify", action="store_true", help="only verify the sha256 of an existing preparation")
    args = ap.parse_args(argv)
    try:
        if args.verify:
            m = manifest.verify(args.data_dir)
        else:
            src = web.Source(base_url=args.base_url, train_shards=args.shards, val_index=args.val_index,
                             test_index=args.test_index)
            kw = {"tokenizer_max_chars": args.tokenizer_max_chars} if args.profile == "web" else {}
            m = prepare(args.profile, args.data_dir, source=src, **kw)
    except (manifest.DataError, shakespeare.CorpusError, web.DownloadError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.profile}: {len(m['files'])} files, data sha256 {m['data_sha256'][:16]}, "
          f"eval_tokens {m['eval_tokens']}, test_eval_tokens {m.get('test_eval_tokens')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
