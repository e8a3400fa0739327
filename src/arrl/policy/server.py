"""The policy: `propose(state, n)` -> Proposals, from a vLLM server we run or an external endpoint.

`PolicyServer` owns a vLLM OpenAI-compatible server (a child process, see arrl.policy.vllm_server)
serving a policy model (see arrl.policy.models) with runtime LoRA. Adapter versions arrive as
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
import os
import random
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from arrl.policy import models, prompt
from arrl.policy.adapters import ADAPTER_FILES, ADAPTER_PREFIX
from arrl.policy.client import RETRYABLE, ChatClient, Sampling
from arrl.policy.proposal import PolicyError, Proposal, ServerFault
from arrl.policy.vllm_server import ServerConfig, ServerError, VLLMServer, tail

@dataclass
class PolicyConfig:
    model: str = models.EMBEDDED  # see arrl.policy.models.resolve
    max_model_len: int | None = None  # default: the model's own, at most 16384
    max_lora_rank: int = 16
    history_k: int = prompt.DEFAULT_HISTORY
    template: str = prompt.DEFAULT_VERSION
    sampling: Sampling = field(default_factory=Sampling)
    max_attempts: int = 3  # per proposal request, across server restarts
    request_timeout_s: float = 600.0
    server: dict = field(default_factory=dict)  # extra ServerConfig fields (threads, dtype, api_key, ...)


class PolicyServer:
    """A vLLM server we own, with runtime LoRA versions. Thread-safe: propose concurrently."""

    def __init__(self, config: PolicyConfig | None = None, workdir: str | Path | None = None,
                 progress: bool = False):
        self.config = config or PolicyConfig()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="arrl-policy-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self.model_dir = models.resolve(self.config.model, progress=progress)
        self.max_model_len = self.config.max_model_len or models.max_model_len(self.model_dir)
        scfg = ServerConfig(model=self.model_dir, max_model_len=self.max_model_len,
                            max_lora_rank=self.config.max_lora_rank, **self.config.server)
        self.server = VLLMServer(scfg, self.workdir / "vllm.log")
        self.version = 0  # the adapter version proposals use (0 = base)
        self._adapter_dir: Path | None = None
        self._lock = threading.RLock()  # guards restarts and adapter changes
        self._generation = 0  # bumps at every (re)start
        self._client: ChatClient | None = None
        self._count = models.token_counter(self.model_dir)
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
            self._client = ChatClient(self.server.url, self.server.config.api_key, self.config.request_timeout_s,
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
                except RETRYABLE as e:
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
            except RETRYABLE as e:
                last = self._after_failure(e, generation)
                continue
            return client.proposals(resp, p, state, s, self.name, version if model is None else -1, t_prompt,
                                    time.perf_counter() - t1, attempt, body, self.server.grammar())
        raise PolicyError(f"no answer after {self.config.max_attempts} attempts: {last}; server log "
                          f"{self.server.log_path}:\n{tail(self.server.log_path, 5)}")

