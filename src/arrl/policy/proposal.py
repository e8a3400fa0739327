"""A proposal: one sampled answer of the policy, with everything the learner needs.

It carries the prompt and response token ids, the per-token logprobs the server reported
for the sampled tokens, the adapter version that produced it (0 = the base model), the
sampling settings and timings. Proposals from an external endpoint may lack token ids
and logprobs (`learnable` is then False): they can be run, not learned from.
`PolicyError` and `ServerFault` are what a policy raises when it cannot answer.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Proposal:
    text: str  # the completion, to be applied with arrl.driver.edits
    fmt: str  # the edit format it was asked for
    state_key: str  # PolicyState.key: proposals with the same key form a group
    policy: str  # "vllm:<model>" or "external:<base url>/<model>"
    adapter_version: int  # 0 = base model; the version name served was arrl-v<version>
    prompt_version: str
    prompt_token_ids: list[int] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)  # of each sampled token, as the server reported
    finish_reason: str = ""
    temperature: float = 1.0
    top_p: float = 1.0
    history_shown: int = 0
    generate_s: float = 0.0  # the request (all n answers of it), server side included
    prompt_s: float = 0.0  # building the prompt
    attempts: int = 1  # >1 when the request was retried (server restart)
    constraint: str = ""  # JSON of the structured-output request ({"json": schema}); "" = unconstrained.
    # The learner rebuilds the server's token mask from it (arrl.learner.grammar): reported logprobs are masked
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def learnable(self) -> bool:
        return bool(self.token_ids) and len(self.logprobs) == len(self.token_ids) and bool(self.prompt_token_ids)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Proposal":
        return cls(**d)


class PolicyError(Exception):
    """A request the policy cannot answer (bad request, unknown adapter, endpoint refused)."""


class ServerFault(PolicyError):
    """The endpoint failed on its side (5xx, 429): worth a retry, after a restart if it died."""
