"""Saving a trained model (in the training process) and loading it (in the evaluator).

A target calls `save_model(model)` once at the end. The model is captured with
`torch.export` for the profile's evaluation shape (eval_batch, seq_len) of int64 token
ids -> (eval_batch, seq_len, vocab_size) logits, so the evaluator needs none of the
target's Python code: it loads a graph of tensor operators and weights. Loading is the
trust boundary, since the file is written by untrusted code:
- weights are unpickled with `weights_only` forced on (no arbitrary objects);
- every operator of the graph must be an ATen/prims operator or a known structural
  operator, and operators that touch files are refused.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from env import runtime

_ALLOWED_NAMESPACES = {"aten", "prims"}
_DENIED_OPS = {"from_file", "_nested_from_file", "save", "_debug_has_internal_overlap"}
_ALLOWED_HIGHER_ORDER = {"wrap_with_autocast", "wrap_with_set_grad_enabled"}


class InvalidModel(Exception):
    """The saved model cannot be evaluated; the message says why."""


def save_model(model, path: Path | None = None) -> Path:
    """Export `model` for evaluation and write it to the run's work directory."""
    import torch

    prof = runtime.profile()
    path = Path(path or runtime.model_path())
    device = next(iter(model.parameters())).device
    example = torch.zeros(prof.eval_batch, prof.seq_len, dtype=torch.long, device=device)
    t0 = time.monotonic()
    model.eval()
    with torch.no_grad():
        exported = torch.export.export(model, (example,))
    tmp = path.with_name("tmp-" + path.name)
    torch.export.save(exported, str(tmp))
    os.replace(tmp, path)
    print(f"saved model to {path.name} in {time.monotonic() - t0:.2f} s", flush=True)
    return path


def _check_graph(program) -> None:
    import operator

    import torch

    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        target = node.target
        if target is operator.getitem:
            continue
        if isinstance(target, torch._ops.OpOverload):
            ns = target.namespace
            name = target._schema.name.split("::")[-1]
            if ns in _ALLOWED_NAMESPACES and name not in _DENIED_OPS:
                continue
            raise InvalidModel(f"operator {ns}::{name} is not allowed in a saved model")
        if isinstance(target, torch._ops.HigherOrderOperator) and target.name() in _ALLOWED_HIGHER_ORDER:
            continue
        raise InvalidModel(f"call of {getattr(target, '__name__', target)!r} is not allowed in a saved model")


def load_model(path: Path, device: str = "cpu"):
    """Load an exported model safely; returns a callable tokens -> logits."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InvalidModel(f"no model saved at {path.name}")
    # torch.export.load retries with weights_only=False when a weights-only load fails;
    # this makes torch refuse that fallback (read at every torch.load call).
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    try:
        program = torch.export.load(str(path))
    except Exception as e:  # any failure to deserialize untrusted bytes is the model's fault
        raise InvalidModel(f"saved model cannot be loaded: {type(e).__name__}: {str(e)[:300]}") from None
    _check_graph(program)
    module = program.module()
    if device != "cpu":
        module = module.to(device)
    return module
