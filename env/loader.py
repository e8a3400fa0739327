"""Training data loader: (inputs, targets) batches from the training shards.

Shards are visited in a seeded random order; each shard's documents are concatenated
into one token stream, cut into non-overlapping windows of seq_len + 1 tokens, and the
windows are served in a seeded random order. Only `train/` is read: the validation and
test splits are not mounted in the training sandbox at all.

The loader counts the tokens it has served in this process (inputs only: batch_size *
seq_len per batch, over every `batches` iterator); `tokens_served()` reads the count and
`env.progress` adds it to each step record.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from env import runtime

_tokens_served = 0  # input tokens of every batch yielded in this process


def tokens_served() -> int:
    """Input tokens (batch_size * seq_len per batch) that `batches` has yielded in this process."""
    return _tokens_served


def shard_paths(data_dir: Path | None = None) -> list[Path]:
    d = Path(data_dir or runtime.data_dir()) / "train"
    paths = sorted(d.glob("shard_*.parquet"))
    if not paths:
        raise FileNotFoundError(f"no training shards in {d}")
    return paths


def read_tokens(path: Path) -> np.ndarray:
    """All tokens of one shard, documents concatenated, as int64."""
    import pyarrow.parquet as pq

    col = pq.read_table(path, columns=["tokens"]).column("tokens").combine_chunks()
    return col.flatten().to_numpy(zero_copy_only=False).astype(np.int64)


def batches(batch_size: int, seq_len: int | None = None, device: str = "cpu", seed: int | None = None,
            data_dir: Path | None = None) -> Iterator[tuple["torch.Tensor", "torch.Tensor"]]:  # noqa: F821
    """Endless (x, y) batches of shape (batch_size, seq_len), y shifted by one token."""
    import torch

    global _tokens_served

    seq_len = seq_len or runtime.profile().seq_len
    rng = np.random.default_rng(runtime.seed() if seed is None else seed)
    paths = shard_paths(data_dir)
    pin = device.startswith("cuda")
    while True:
        for i in rng.permutation(len(paths)):
            tokens = read_tokens(paths[i])
            n = (len(tokens) - 1) // seq_len
            if n < 1:
                continue
            starts = rng.permutation(n) * seq_len
            for j in range(0, n - batch_size + 1, batch_size) if n >= batch_size else [0]:
                idx = starts[j:j + batch_size, None] + np.arange(seq_len + 1)
                if len(idx) < batch_size:  # a shard smaller than one batch: sample with replacement
                    idx = starts[rng.integers(0, n, batch_size), None] + np.arange(seq_len + 1)
                chunk = torch.from_numpy(tokens[idx])
                if pin:
                    chunk = chunk.pin_memory()
                chunk = chunk.to(device, non_blocking=True)
                _tokens_served += batch_size * seq_len
                yield chunk[:, :-1], chunk[:, 1:]
