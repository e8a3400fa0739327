"""Per-profile constants of the frozen environment.

A profile fixes everything that makes two val_bpb numbers comparable: the corpus and its
split, the tokenizer, the sequence length, the evaluation size and the default time
budget. Targets read these through `env.runtime.profile()`; they never set them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    tokenizer: str  # "bytes" (256 symbols) or "bpe" (trained locally at prepare time)
    vocab_size: int  # width of the logits a model must produce
    seq_len: int  # tokens per training / evaluation window
    eval_tokens: int  # target tokens scored by the evaluator (capped by the val split)
    eval_batch: int  # windows per evaluator forward pass; the saved model's batch size
    time_budget_s: float  # default training budget of a run
    bpb_floor: float  # val_bpb below this is physically implausible for the corpus


SHAKESPEARE = Profile(
    name="shakespeare",
    tokenizer="bytes",
    vocab_size=256,
    seq_len=256,
    eval_tokens=16384,
    eval_batch=16,
    time_budget_s=30.0,
    bpb_floor=0.6,
)

WEB = Profile(
    name="web",
    tokenizer="bpe",
    vocab_size=8192,
    seq_len=2048,
    eval_tokens=2**20,
    eval_batch=16,
    time_budget_s=300.0,
    bpb_floor=0.4,
)

PROFILES = {p.name: p for p in (SHAKESPEARE, WEB)}


def get(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise KeyError(f"unknown profile {name!r} (known: {known})") from None
