"""Evaluation of val_bpb (or test_bpb), in a process separate from training.

The evaluator loads the model a target saved (`env.model_io`), checks it is causal,
and scores the first `eval_tokens` tokens of the validation split. It reads the
validation shard, which the training process never had. With `split="test"` it reads
only the sealed test split instead and scores its first `test_eval_tokens` tokens; the
result then says `test_bpb` (and `"split": "test"`) where it would say `val_bpb`.

    val_bpb = sum over scored tokens of -ln p(token) / (ln 2 * UTF-8 bytes of those tokens)

Tokens that stand for no bytes (BOS) are not scored. A uniform model over 256 bytes
scores exactly 8.0 on the byte-level profile.

Causality probe: perturbing the tokens after position t (in the same window and in every
other window of the batch) must not change the logits at positions <= t. A model that
fails it gets status `invalid_metric`, whatever its loss.

As a program: `python -m env.evaluate --model M --data-dir D [--split val|test] [--wait]`
prints one JSON line; with `--wait` it imports everything first and then waits for a line
on stdin, so a sandbox can start it while training runs and pay no start-up time after.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from env import manifest as manifest_mod
from env import model_io

PROBE_TOLERANCE = 1e-4  # relative to the largest |logit|; exact on CPU, slack for GPU kernels
SPLITS = ("val", "test")


class MetricError(Exception):
    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")


def split_tokens(data_dir: Path, split: str = "val") -> np.ndarray:
    """All tokens of one evaluation split (`val` or `test`), documents concatenated, as int64."""
    import pyarrow.parquet as pq

    _check_split(split)
    paths = sorted((Path(data_dir) / split).glob("shard_*.parquet"))
    if not paths:
        what = "validation" if split == "val" else split
        raise FileNotFoundError(f"no {what} shard in {Path(data_dir) / split}")
    parts = [pq.read_table(p, columns=["tokens"]).column("tokens").combine_chunks().flatten().to_numpy(
        zero_copy_only=False) for p in paths]
    return np.concatenate(parts).astype(np.int64)


def val_tokens(data_dir: Path) -> np.ndarray:
    return split_tokens(data_dir, "val")


def eval_tokens(meta: dict, split: str = "val") -> int:
    """How many tokens of `split` are scored: the manifest's `eval_tokens` or `test_eval_tokens`."""
    _check_split(split)
    if split == "val":
        return meta["eval_tokens"]
    if not manifest_mod.has_test_split(meta):
        raise manifest_mod.DataError("the data was prepared without a test split (no test_eval_tokens in "
                                     f"{manifest_mod.MANIFEST}); prepare it again")
    return meta["test_eval_tokens"]


def _windows(data_dir: Path, meta: dict, split: str = "val") -> tuple[np.ndarray, np.ndarray]:
    n, t = eval_tokens(meta, split), meta["seq_len"]
    tokens = split_tokens(data_dir, split)[: n + 1]
    return tokens[:-1].reshape(-1, t), tokens[1:].reshape(-1, t)


def _forward(model, x, meta: dict):
    import torch

    with torch.no_grad():
        logits = model(x)
    if isinstance(logits, (tuple, list)) and logits:
        logits = logits[0]
    want = (x.shape[0], x.shape[1], meta["vocab_size"])
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != want:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise MetricError("invalid_metric", f"model output has shape {got}, expected logits of shape {want}")
    if not torch.isfinite(logits).all():
        raise MetricError("nan", "model produced non-finite logits")
    return logits.float()


def causality_probe(model, x, meta: dict, base=None, seed: int = 0) -> None:
    """Raise MetricError(invalid_metric) if a prediction depends on later tokens.

    `base` is the model's output for `x` when the caller already has it.
    """
    import torch

    b, t = x.shape
    v = meta["vocab_size"]
    g = torch.Generator().manual_seed(seed)
    base = _forward(model, x, meta) if base is None else base
    scale = PROBE_TOLERANCE * (1.0 + base.abs().max().item())

    def changed(cut: torch.Tensor) -> torch.Tensor:  # new tokens after position cut[row]
        noise = torch.randint(1, v, x.shape, generator=g).to(x.device)
        after = torch.arange(t, device=x.device)[None, :] > cut[:, None].to(x.device)
        return torch.where(after, (x + noise) % v, x)

    # 1) every window gets its own cut; its prefix must not move.
    cuts = torch.randint(0, t - 1, (b,), generator=g)
    out = _forward(model, changed(cuts), meta)
    for row in range(b):
        c = int(cuts[row])
        if (out[row, : c + 1] - base[row, : c + 1]).abs().max().item() > scale:
            raise MetricError("invalid_metric", f"causality probe failed: logits at positions <= {c} of window "
                                                f"{row} changed when only later tokens changed")
    # 2) window 0 must not see the other windows (they hold its continuation).
    x2 = changed(torch.full((b,), t // 2))
    x2[1:] = torch.randint(0, v, (b - 1, t), generator=g).to(x.device)
    out = _forward(model, x2, meta)
    if (out[0, : t // 2 + 1] - base[0, : t // 2 + 1]).abs().max().item() > scale:
        raise MetricError("invalid_metric", "causality probe failed: window 0 depends on other windows of the batch")


def score(model, data_dir: Path, meta: dict, device: str = "cpu", split: str = "val") -> dict:
    """val_bpb (`split="test"`: test_bpb) of `model` on that split, after the causality probe."""
    import torch
    import torch.nn.functional as F

    _check_split(split)
    token_bytes = torch.from_numpy(np.load(Path(data_dir) / "token_bytes.npy").astype(np.int64)).to(device)
    inputs, targets = _windows(data_dir, meta, split)
    bsz, nwin = meta["eval_batch"], inputs.shape[0]
    pad = (-nwin) % bsz  # the saved model has a fixed batch size: pad the last batch, ignore the pad
    inputs = np.concatenate([inputs, np.zeros((pad, inputs.shape[1]), np.int64)])
    targets = np.concatenate([targets, np.zeros((pad, targets.shape[1]), np.int64)])
    x_all, y_all = torch.from_numpy(inputs), torch.from_numpy(targets)

    nats, nbytes = 0.0, 0
    for i in range(0, nwin, bsz):
        x, y = x_all[i:i + bsz].to(device), y_all[i:i + bsz].to(device)
        logits = _forward(model, x, meta)
        if i == 0:  # probe before scoring anything
            causality_probe(model, x, meta, base=logits)
        real = min(bsz, nwin - i)
        # float64 log-softmax, a few windows at a time to bound memory: exact enough that
        # a uniform model scores 8.0 to 1e-12
        step = max(1, (1 << 25) // (logits.shape[1] * logits.shape[2]))
        for j in range(0, real, step):
            lg, yy = logits[j:min(j + step, real)].double(), y[j:min(j + step, real)]
            nll = -F.log_softmax(lg, dim=-1).gather(-1, yy[..., None]).squeeze(-1)
            w = token_bytes[yy]
            nats += (nll * (w > 0)).sum().item()
            nbytes += int(w.sum().item())
    return {f"{split}_bpb": nats / (math.log(2) * nbytes), "eval_tokens": nwin * inputs.shape[1],
            "eval_bytes": nbytes}


def evaluate(model_path: Path, data_dir: Path, device: str = "cpu", split: str = "val") -> dict:
    """Evaluate a saved model on `split`. Never raises for the model's faults: they become a status.

    Faults of the data (no manifest; for `test`, data prepared without a test split or a
    missing test shard) raise manifest.DataError before the model is loaded.
    """
    t0 = time.monotonic()
    _check_split(split)
    meta = manifest_mod.read(data_dir)
    if split != "val":
        eval_tokens(meta, split)
        if not sorted((Path(data_dir) / split).glob("shard_*.parquet")):
            raise manifest_mod.DataError(f"{Path(data_dir) / split}: no {split} shard")
    try:
        model = model_io.load_model(model_path, device)
        result = {"status": "ok", **score(model, data_dir, meta, device, split)}
    except model_io.InvalidModel as e:
        result = {"status": "invalid_metric", "message": str(e)}
    except MetricError as e:
        result = {"status": e.status, "message": str(e)}
    except Exception as e:  # the graph is untrusted: any failure while running it is its own
        result = {"status": "invalid_metric", "message": f"model failed during evaluation: {type(e).__name__}: "
                                                         f"{str(e)[:300]}"}
    if split != "val":
        result["split"] = split
    result["eval_s"] = round(time.monotonic() - t0, 4)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m env.evaluate")
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--data-dir", required=True, type=Path)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--split", default="val", choices=SPLITS,
                    help="val (default): print val_bpb; test: score only <data-dir>/test/ and print test_bpb")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("ARRL_THREADS", os.cpu_count() or 1)))
    ap.add_argument("--wait", action="store_true", help="import first, then wait for a line on stdin")
    args = ap.parse_args(argv)
    import torch
    import torch._export.serde.serialize  # noqa: F401  (import the loader before the model exists)
    import torch.export
    import torch.export.pt2_archive._package  # noqa: F401

    torch.set_num_threads(max(1, args.threads))
    if args.wait:
        print(json.dumps({"ready": True}), flush=True)
        if sys.stdin.readline().strip() != "go":
            return 1
    print(json.dumps(evaluate(args.model, args.data_dir, args.device, args.split)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
