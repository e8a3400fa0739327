"""Policy models: the tiny random Llama, the embedded SmolLM2 conversion, the model cache."""

from __future__ import annotations

import json
import os

import pytest

from arrl.policy import models


def test_tiny_model_has_byte_tokenizer_chat_template_and_checksums(tiny_model):
    from transformers import AutoTokenizer

    cfg = json.loads((tiny_model / "config.json").read_text())
    assert cfg["head_dim"] == 64 and cfg["hidden_size"] // cfg["num_attention_heads"] == 64  # a vLLM CPU size
    tok = AutoTokenizer.from_pretrained(tiny_model)
    text = "héllo\n\tworld ✓"
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) == len(text.encode()) and tok.decode(ids) == text
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    manifest = json.loads((tiny_model / models.MANIFEST).read_text())
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(manifest["files"])
    assert models._verified(tiny_model)


def test_cache_is_reused_and_rebuilt_when_tampered(tmp_path):
    d = models.resolve(models.TINY, home=tmp_path, progress=False)
    weights = os.path.join(d, "model.safetensors")
    first = os.stat(weights).st_mtime_ns
    assert models.resolve(models.TINY, home=tmp_path, progress=False) == d
    assert os.stat(weights).st_mtime_ns == first  # not rebuilt
    with open(weights, "r+b") as f:
        f.seek(200)
        f.write(b"\xff\xff\xff\xff")
    assert not models._verified(tmp_path / models.TINY)
    models.resolve(models.TINY, home=tmp_path, progress=False)
    assert models._verified(tmp_path / models.TINY)


def test_processes_that_build_the_cache_at_once_all_get_it(tmp_path):
    """A run's policy server and learner resolve the model side by side on a fresh machine: the builds take
    turns (measured before the lock: the second removed the first's work folder, and the learner died)."""
    import subprocess
    import sys

    code = ("import sys; from arrl.policy import models; "
            "print(models.resolve(models.TINY, home=sys.argv[1], progress=False))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
    assert {o.strip() for o, _ in outs} == {str(tmp_path / models.TINY)}
    assert models._verified(tmp_path / models.TINY)
    assert not (tmp_path / f"{models.TINY}.tmp").exists()


def test_resolve_rejects_bad_specs_with_a_clear_message(tmp_path):
    with pytest.raises(models.ModelError, match="empty"):
        models.resolve(" ")
    with pytest.raises(models.ModelError, match="no such model directory"):
        models.resolve(str(tmp_path / "missing"))
    (tmp_path / "notamodel").mkdir()
    with pytest.raises(models.ModelError, match="no config.json"):
        models.resolve(str(tmp_path / "notamodel"))
    assert models.resolve("HuggingFaceTB/SmolLM2-1.7B-Instruct") == "HuggingFaceTB/SmolLM2-1.7B-Instruct"


def test_embedded_smollm2_converts_to_a_working_safetensors_model(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = models.resolve(models.EMBEDDED, home=tmp_path, progress=False)
    meta = json.loads(open(os.path.join(d, models.MANIFEST)).read())
    assert meta["source_sha256"] == models.SMOLLM2_SHA256 and "model.safetensors" in meta["files"]
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32).eval()
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(135e6, rel=0.02)
    assert "<|im_start|>" in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    ids = tok("def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n", return_tensors="pt")
    with torch.no_grad():
        loss = model(**ids, labels=ids["input_ids"]).loss.item()
    assert loss < 2.5  # a random model of this vocabulary scores about ln(49152) = 10.8 nats per token
