"""Token masks of constrained answers: the learner sees the distribution the server sampled from.

A catalog edit is sampled under a JSON-schema grammar (vLLM structured outputs, xgrammar
backend): at each step the server masks the tokens the grammar forbids and reports the
logprob of the sampled token under the *masked* distribution (a forced token has logprob
0). For the PPO ratio to compare like with like, the learner must renormalise over the same
allowed set. `Masks` rebuilds it: it compiles the recorded schema with the same xgrammar
settings the server used (`Proposal.constraint` records both) and replays the sampled
tokens through a matcher, collecting one packed bitmask (int32 words, 32 tokens each) per
response token. An unconstrained answer has no mask (every token allowed).
"""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np


class GrammarError(Exception):
    """A recorded answer does not fit its recorded grammar (so its logprobs cannot be trusted)."""


def words(vocab_size: int) -> int:
    return (vocab_size + 31) // 32


def unpack(bits, vocab_size: int):
    """Packed int32 bitmasks (..., W) -> bool (..., vocab_size); works on numpy arrays and torch tensors."""
    if isinstance(bits, np.ndarray):
        shifts = np.arange(32, dtype=np.int64)
        out = ((bits[..., None].astype(np.int64) >> shifts) & 1).astype(bool)
    else:
        import torch

        shifts = torch.arange(32, device=bits.device, dtype=torch.int64)
        out = ((bits.unsqueeze(-1).to(torch.int64) >> shifts) & 1).bool()
    return out.reshape(*bits.shape[:-1], -1)[..., :vocab_size]


class Masks:
    """Rebuilds structured-output masks for one tokenizer and vocabulary size (the model's)."""

    def __init__(self, model_dir: str, vocab_size: int):
        import xgrammar as xgr
        from transformers import AutoTokenizer

        self._xgr = xgr
        self.vocab_size = vocab_size
        tok = AutoTokenizer.from_pretrained(model_dir)
        self._compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tok, vocab_size=vocab_size),
                                             max_threads=1, cache_enabled=True)
        self._compiled = lru_cache(maxsize=256)(self._compile)

    def _compile(self, schema: str, any_whitespace: bool):
        return self._compiler.compile_json_schema(schema, any_whitespace=any_whitespace,
                                                  separators=None if any_whitespace else (",", ":"))

    def masks(self, constraint: str, token_ids: list[int]) -> np.ndarray | None:
        """(T, W) int32 packed masks of the allowed tokens before each sampled token; None if unconstrained."""
        if not constraint:
            return None
        spec = json.loads(constraint)
        server = spec.get("server") or {}
        schema = spec.get("json")
        if schema is None or server.get("backend") != "xgrammar":
            raise GrammarError(f"cannot rebuild the mask of constraint {constraint[:80]!r} (needs a JSON schema "
                               f"served with the xgrammar backend)")
        ctx = self._compiled(json.dumps(schema), not server.get("disable_any_whitespace", False))
        matcher = self._xgr.GrammarMatcher(ctx)
        buf = self._xgr.allocate_token_bitmask(1, self.vocab_size)
        out = np.zeros((len(token_ids), words(self.vocab_size)), dtype=np.int32)
        for i, t in enumerate(token_ids):
            matcher.fill_next_token_bitmask(buf, 0)
            out[i] = buf[0].numpy()
            if not matcher.accept_token(int(t)):
                raise GrammarError(f"token {t} at position {i} is not allowed by the recorded grammar")
        return out
