"""val_bpb correctness, the causality probe, the sealed test split, and the evaluator's trust boundary."""

from __future__ import annotations

import json
import math
import pickle
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn as nn

from env import evaluate, manifest, model_io


class Constant(nn.Module):
    """Logits that ignore the input: the same distribution at every position."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, idx):
        return self.logits.expand(idx.shape[0], idx.shape[1], -1) + 0.0 * idx[..., None]


class Peek(nn.Module):
    """Cheats by looking at the next token (within the window)."""

    def __init__(self, vocab: int):
        super().__init__()
        self.emb = nn.Parameter(torch.randn(vocab, vocab))

    def forward(self, idx):
        return self.emb[torch.roll(idx, -1, dims=1)]


class PeekNextWindow(nn.Module):
    """Causal within a window, but reads the next window of the batch (its continuation)."""

    def __init__(self, vocab: int):
        super().__init__()
        self.emb = nn.Parameter(torch.randn(vocab, vocab))

    def forward(self, idx):
        return self.emb[idx] + self.emb[torch.roll(idx, -1, dims=0)][:, :1, :]


class Causal(nn.Module):
    """A real causal model: embedding plus a running mean of the past."""

    def __init__(self, vocab: int):
        super().__init__()
        self.emb = nn.Parameter(torch.randn(vocab, 32))
        self.head = nn.Parameter(torch.randn(32, vocab))

    def forward(self, idx):
        x = self.emb[idx]
        x = x.cumsum(1) / torch.arange(1, idx.shape[1] + 1)[None, :, None]
        return x @ self.head


def _save(model, data_dir, tmp_path, profile_env):
    profile_env(data_dir, tmp_path)
    return model_io.save_model(model)


def _scored_targets(data_dir, split: str = "val") -> np.ndarray:
    """The validation (or test) tokens the evaluator scores, read independently of env code."""
    meta = manifest.read(data_dir)
    tables = [pq.read_table(p) for p in sorted((data_dir / split).glob("*.parquet"))]
    tokens = np.concatenate([np.concatenate(t.column("tokens").to_pylist()) for t in tables])
    return tokens[1: meta["eval_tokens" if split == "val" else "test_eval_tokens"] + 1]


def _unigram(targets: np.ndarray) -> tuple[torch.Tensor, float]:
    """(logits of the unigram distribution of `targets`, its entropy in bits)."""
    counts = np.bincount(targets, minlength=256).astype(np.float64)
    p = counts / counts.sum()
    entropy = -sum(q * math.log2(q) for q in p if q > 0)
    return torch.tensor([math.log(q) if q > 0 else -60.0 for q in p], dtype=torch.float32), entropy


def test_uniform_byte_model_scores_exactly_8(shakespeare_dir, tmp_path, profile_env):
    path = _save(Constant(torch.zeros(256)), shakespeare_dir, tmp_path, profile_env)
    result = evaluate.evaluate(path, shakespeare_dir)
    assert result["status"] == "ok", result
    assert result["val_bpb"] == pytest.approx(8.0, abs=1e-9)
    assert result["eval_tokens"] == 16384


def test_unigram_model_scores_the_unigram_entropy(shakespeare_dir, tmp_path, profile_env):
    logits, entropy = _unigram(_scored_targets(shakespeare_dir))
    path = _save(Constant(logits), shakespeare_dir, tmp_path, profile_env)
    result = evaluate.evaluate(path, shakespeare_dir)
    assert result["status"] == "ok", result
    assert result["val_bpb"] == pytest.approx(entropy, abs=1e-5)
    assert 4.0 < entropy < 5.0  # English text, bytes


def test_bpb_divides_by_bytes_not_tokens(web_dir, tmp_path, profile_env):
    """With BPE, a uniform model scores ln(V) nats per token over the bytes those tokens hold."""
    meta = manifest.read(web_dir)
    path = _save(Constant(torch.zeros(meta["vocab_size"])), web_dir, tmp_path, profile_env)
    result = evaluate.evaluate(path, web_dir)
    targets = _scored_targets(web_dir)
    token_bytes = np.load(web_dir / "token_bytes.npy")
    scored = targets[token_bytes[targets] > 0]
    want = len(scored) * math.log2(meta["vocab_size"]) / token_bytes[targets].sum()
    assert result["status"] == "ok", result
    assert result["val_bpb"] == pytest.approx(want, rel=1e-9)
    assert len(scored) < len(targets)  # BOS tokens are in the stream and are not scored


def _without_val(data_dir, tmp_path):
    """A copy of the prepared data with no validation split at all."""
    copy = tmp_path / "no-val"
    shutil.copytree(data_dir, copy)
    shutil.rmtree(copy / "val")
    return copy


def test_test_split_is_scored_and_val_is_never_read(shakespeare_dir, tmp_path, profile_env):
    """A model fit to the test targets scores their entropy on the test split, another number on val."""
    test_targets = _scored_targets(shakespeare_dir, "test")
    logits, entropy = _unigram(test_targets)
    path = _save(Constant(logits), shakespeare_dir, tmp_path, profile_env)
    test = evaluate.evaluate(path, _without_val(shakespeare_dir, tmp_path), split="test")
    assert test["status"] == "ok", test
    assert set(test) == {"status", "test_bpb", "eval_tokens", "eval_bytes", "split", "eval_s"}
    assert test["split"] == "test" and test["eval_tokens"] == len(test_targets) == 16384
    assert test["test_bpb"] == pytest.approx(entropy, abs=1e-5)
    val = evaluate.evaluate(path, shakespeare_dir)
    assert val["status"] == "ok" and "split" not in val and "test_bpb" not in val
    assert abs(val["val_bpb"] - test["test_bpb"]) > 0.01  # the same model, another split, another number
    assert evaluate.evaluate(path, shakespeare_dir, split="test")["test_bpb"] == test["test_bpb"]


def test_uniform_model_scores_8_on_the_test_split(shakespeare_dir, tmp_path, profile_env):
    path = _save(Constant(torch.zeros(256)), shakespeare_dir, tmp_path, profile_env)
    result = evaluate.evaluate(path, shakespeare_dir, split="test")
    assert result["status"] == "ok" and result["test_bpb"] == pytest.approx(8.0, abs=1e-9)


def test_command_line_split_option(shakespeare_dir, tmp_path, profile_env):
    """`--split test` prints test_bpb from test/ alone; `--split val` prints what the default always printed."""
    path = _save(Causal(256), shakespeare_dir, tmp_path, profile_env)
    no_val = _without_val(shakespeare_dir, tmp_path)

    def run(data_dir, *extra):
        proc = subprocess.run([sys.executable, "-m", "env.evaluate", "--model", str(path), "--data-dir",
                               str(data_dir), "--threads", "1", *extra], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    test = run(no_val, "--split", "test")
    assert list(test) == ["status", "test_bpb", "eval_tokens", "eval_bytes", "split", "eval_s"]
    assert test["status"] == "ok" and test["split"] == "test"
    in_process = evaluate.evaluate(path, shakespeare_dir, split="test")
    assert test["test_bpb"] == in_process["test_bpb"]
    val = run(shakespeare_dir, "--split", "val")
    assert list(val) == ["status", "val_bpb", "eval_tokens", "eval_bytes", "eval_s"]  # unchanged
    assert val["val_bpb"] == evaluate.evaluate(path, shakespeare_dir)["val_bpb"] != test["test_bpb"]
    proc = subprocess.run([sys.executable, "-m", "env.evaluate", "--model", str(path), "--data-dir", str(no_val)],
                          capture_output=True, text=True, timeout=300)
    assert json.loads(proc.stdout)["status"] == "invalid_metric"  # the default split is val, and val is gone


def test_test_split_of_old_data_is_a_data_error(shakespeare_dir, tmp_path, profile_env):
    """Data prepared before the test split existed cannot be scored on it; the model is not blamed."""
    path = _save(Constant(torch.zeros(256)), shakespeare_dir, tmp_path, profile_env)
    old = tmp_path / "old"
    shutil.copytree(shakespeare_dir, old)
    shutil.rmtree(old / "test")
    m = json.loads((old / "manifest.json").read_text())
    for key in ("test_eval_tokens", "test_tokens"):
        del m[key]
    m["files"] = {f: v for f, v in m["files"].items() if not f.startswith("test/")}
    (old / "manifest.json").write_text(json.dumps(m))
    assert not manifest.has_test_split(manifest.read(old))
    with pytest.raises(manifest.DataError, match="without a test split"):
        evaluate.evaluate(path, old, split="test")
    assert evaluate.evaluate(path, old)["val_bpb"] == pytest.approx(8.0, abs=1e-9)  # val still works
    missing = tmp_path / "missing"
    shutil.copytree(shakespeare_dir, missing)
    shutil.rmtree(missing / "test")
    with pytest.raises(manifest.DataError, match="no test shard"):
        evaluate.evaluate(path, missing, split="test")
    with pytest.raises(ValueError, match="unknown split"):
        evaluate.evaluate(path, shakespeare_dir, split="train")


@pytest.mark.parametrize("cheat", [Peek, PeekNextWindow])
def test_causality_probe_flags_look_ahead(cheat, shakespeare_dir, tmp_path, profile_env):
    path = _save(cheat(256), shakespeare_dir, tmp_path, profile_env)
    result = evaluate.evaluate(path, shakespeare_dir)
    assert result["status"] == "invalid_metric"
    assert "causality probe failed" in result["message"]
    result = evaluate.evaluate(path, shakespeare_dir, split="test")  # the probe runs on the test split too
    assert result["status"] == "invalid_metric" and result["split"] == "test"
    assert "causality probe failed" in result["message"] and "test_bpb" not in result


def test_causality_probe_passes_a_causal_model(shakespeare_dir, tmp_path, profile_env):
    path = _save(Causal(256), shakespeare_dir, tmp_path, profile_env)
    result = evaluate.evaluate(path, shakespeare_dir)
    assert result["status"] == "ok", result
    assert result["val_bpb"] > 0


def test_missing_model_is_invalid_metric(shakespeare_dir, tmp_path):
    result = evaluate.evaluate(tmp_path / "model.pt2", shakespeare_dir)
    assert result["status"] == "invalid_metric"
    assert "no model saved" in result["message"]


def test_wrong_output_shape_is_invalid_metric(shakespeare_dir, tmp_path, profile_env):
    path = _save(Constant(torch.zeros(100)), shakespeare_dir, tmp_path, profile_env)
    result = evaluate.evaluate(path, shakespeare_dir)
    assert result["status"] == "invalid_metric"
    assert "shape" in result["message"]


def test_non_finite_logits_are_nan(shakespeare_dir, tmp_path, profile_env):
    path = _save(Constant(torch.full((256,), float("nan"))), shakespeare_dir, tmp_path, profile_env)
    assert evaluate.evaluate(path, shakespeare_dir)["status"] == "nan"


class _Payload:
    def __reduce__(self):
        return (open, ("/tmp/arrl-pickle-payload-ran", "w"))


def test_pickle_payload_in_model_file_does_not_run(shakespeare_dir, tmp_path, profile_env):
    """A model archive whose weights are a pickle payload is refused, never executed."""
    marker = "/tmp/arrl-pickle-payload-ran"
    import os

    if os.path.exists(marker):
        os.unlink(marker)
    path = _save(Constant(torch.zeros(256)), shakespeare_dir, tmp_path, profile_env)
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(evil, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("sample_inputs/model.pt") or (
                    "/data/weights/" in item.filename and not item.filename.endswith(".json")):
                data = pickle.dumps(_Payload())
            dst.writestr(item, data)
    result = evaluate.evaluate(evil, shakespeare_dir)
    assert result["status"] == "invalid_metric"
    assert "cannot be loaded" in result["message"]
    assert not os.path.exists(marker)


def test_file_reading_operator_is_refused():
    """torch.export cannot trace torch.from_file, but a hand-made graph file could hold it."""
    import torch.fx

    graph = torch.fx.Graph()
    graph.call_function(torch.ops.aten.from_file.default, ("/arrl/data/val/shard_00000.parquet",))
    program = type("Program", (), {"graph": graph})()
    with pytest.raises(model_io.InvalidModel, match="from_file"):
        model_io._check_graph(program)


def test_ordinary_graph_passes_the_operator_check(shakespeare_dir, tmp_path, profile_env):
    path = _save(Causal(256), shakespeare_dir, tmp_path, profile_env)
    model_io._check_graph(torch.export.load(str(path)))
