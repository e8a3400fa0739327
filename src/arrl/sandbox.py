"""Process sandbox: run one untrusted train.py under its budget, then evaluate it.

Containment, from the outside (nothing here trusts the script):
- isolation `bwrap` (bubblewrap): new user, pid, network, ipc and uts namespaces; only
  loopback exists, so the network is cut off; a minimal read-only root (system dirs,
  the Python installation), the env code read-only at /arrl/env, the training split
  read-only at /arrl/data (the validation split is not mounted), and one writable work
  directory at /arrl/work. /proc/sys is read-only (a process of host root keeps root's
  uid inside and could otherwise set global sysctls such as kernel.core_pattern); /tmp
  (memory_mb) and /dev/shm (64 MB) are size-capped tmpfs, / and /dev are read-only
  (tmpfs pages are nobody's resident memory). Killing bwrap takes down the whole pid
  namespace, so no child can outlive the run.
- isolation `none` (no bubblewrap on the machine): a plain process group; children are
  found by process tree and by a per-run token in their environment and killed. The
  network is open and the env is writable; the outcome says so.
- both: the run's cores (`cores`, arrl.placement) confine the training process and the
  evaluator with a cpuset cgroup where the machine allows it (arrl.cores), and the CPU time
  the training tree gets is measured from outside (the contention check, arrl.contention);
  `prlimit` caps the data segment (memory), file size and core dumps; a watchdog
  sums the resident memory and counts the processes of the run's tree, and sizes the
  work directory (many files each under the file-size cap still fill a disk); the run is
  killed at budget + grace measured from spawn (status `timeout`); stdout/stderr are
  captured into a log with a size cap.
The evaluator (`env.evaluate`) runs in a second sandbox that sees the validation split
and, read-only, the work directory. It is started next to the training process and
waits, so its imports cost nothing after training. It runs with `python -P`: its working
directory is the work dir, and modules planted there must not shadow its imports.
The host reads the work dir's progress file without following links or opening anything
but a regular file, and keeps only the records `env.progress.read` can take.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

from arrl.procs import started
from arrl.cores import CoreSet, parse as parse_cores
from arrl.outcome import Outcome, Timings

ENV_MOUNT = "/arrl/env"
DATA_MOUNT = "/arrl/data"
WORK_MOUNT = "/arrl/work"
MODEL_FILE = "model.pt2"
PROGRESS_FILE = "progress.jsonl"
_OOM_MARKERS = ("MemoryError", "out of memory", "Unable to allocate", "std::bad_alloc")
# How often the watchdog looks, while a run trains. Each look, and each wake-up, costs the run: it
# lands on the run's own cores, and a preempted torch thread stalls its partner at the next
# barrier (at 20 looks a second the worker took 13% of a core from a 2-core tiny run; at 4 looks
# plus a 20-a-second exit poll, 1.8%: bench/idle_parts.py). So the watchdog sleeps on the
# trainer's exit (a pidfd) between looks: the process tree (memory, process count, CPU time)
# twice a second, the work dir's size and the progress records (early abort) once a second, and
# the deadline when it comes. A descendant that exits between looks loses at most WATCH_S of its
# CPU time from the accounting (the trainer itself none: it is read once more as a zombie);
# prlimit bounds each process's memory in between.
WATCH_S = 0.5
DISK_S = 1.0
PROGRESS_S = 1.0


@dataclass(frozen=True)
class SandboxConfig:
    budget_s: float  # training budget the target sees
    grace_s: float = 20.0  # extra time for start-up and saving before the hard kill
    memory_mb: int = 4096  # resident memory of the whole process tree
    max_procs: int = 64  # processes in the run's tree
    max_file_mb: int = 2048  # largest file the run may write
    max_work_mb: int = 8192  # disk the run's work directory may hold in all
    log_cap_bytes: int = 1 << 20  # log kept on disk (head); the tail is always kept
    threads: int = os.cpu_count() or 1
    eval_timeout_s: float = 300.0
    isolation: str = "auto"  # auto | bwrap | none
    python: str = sys.executable
    gpu: str | None = None  # host GPU index or UUID given to this run; None = CPU
    cores: str = ""  # the CPU cores the run is confined to, e.g. "1" or "0-3" ("" = not pinned)
    nice: int | None = 0  # the run's scheduling priority (None = inherit). Ray starts its workers at nice 15,
    # where a run would yield its cores to every nice-0 process of the node; raising it back needs root
    # (elsewhere `nice` says it cannot and the run keeps the worker's)


def bwrap_available() -> bool:
    """True if bubblewrap exists and can create its namespaces on this machine."""
    if shutil.which("bwrap") is None:
        return False
    try:
        r = subprocess.run(["bwrap", "--unshare-all", "--ro-bind", "/", "/", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


class _Log:
    """Drain a pipe into a capped file, keeping the last `tail_bytes` in memory."""

    def __init__(self, pipe, path: Path, cap: int, tail_bytes: int = 64 << 10):
        self.path, self.cap, self.written, self.dropped = path, cap, 0, 0
        self._tail = collections.deque()
        self._tail_size, self._tail_bytes = 0, tail_bytes
        self._thread = threading.Thread(target=self._drain, args=(pipe,), daemon=True)
        self._thread.start()

    def _drain(self, pipe) -> None:
        with open(self.path, "wb") as f:
            while block := pipe.read1(1 << 16) if hasattr(pipe, "read1") else pipe.read(1 << 16):
                room = self.cap - self.written
                if room > 0:
                    f.write(block[:room])
                    self.written += min(room, len(block))
                self.dropped += max(0, len(block) - max(room, 0))
                self._tail.append(block)
                self._tail_size += len(block)
                while self._tail_size - len(self._tail[0]) >= self._tail_bytes:
                    self._tail_size -= len(self._tail.popleft())
            if self.dropped:
                f.write(f"\n[arrl: log capped at {self.cap} bytes; {self.dropped} bytes dropped]\n".encode())

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)

    def tail(self, chars: int = 4000) -> str:
        return b"".join(self._tail).decode("utf-8", "replace")[-chars:]


class ProcessSandbox:
    def __init__(self, env_dir: Path, data_dir: Path, config: SandboxConfig):
        self.env_dir = Path(env_dir).resolve()
        self.data_dir = Path(data_dir).resolve()
        self.config = config
        iso = config.isolation
        if iso == "auto":
            iso = "bwrap" if bwrap_available() else "none"
        elif iso == "bwrap" and not bwrap_available():
            raise RuntimeError("isolation 'bwrap' requested but bubblewrap is missing or cannot create namespaces")
        elif iso not in ("bwrap", "none"):
            raise ValueError(f"unknown isolation {iso!r} (auto, bwrap, none)")
        self.isolation = iso
        self.coreset = CoreSet(config.cores)  # made once per sandbox, used by every run

    def close(self) -> None:
        """Release the run's cgroup (arrl.cores); a sandbox is used for many runs, then closed."""
        self.coreset.close()

    @property
    def pinning(self) -> str:
        """How the run is held to its cores: "cpuset" (a wall), "affinity" (honest code only) or ""."""
        return self.coreset.mode

    # ---- building the command lines ---------------------------------------------
    def _data_items(self, split: str) -> list[Path]:
        """What a sandbox sees of the data dir: the manifest and tables, plus one split."""
        items = [p for p in self.data_dir.iterdir() if p.is_file() and not p.name.endswith((".tmp", ".part"))]
        return sorted(items) + [self.data_dir / split]

    def _env_vars(self, token: str, data: str, work: str, env_parent: str, seed: int) -> dict:
        cfg = self.config
        threads = str(cfg.threads)
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": work,
            "TMPDIR": "/tmp" if self.isolation == "bwrap" else work,
            "LANG": "C.UTF-8",
            "PYTHONPATH": env_parent,
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "PYTHONNOUSERSITE": "1",
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "ARRL_THREADS": threads,
            "ARRL_DATA_DIR": data,
            "ARRL_WORK_DIR": work,
            "ARRL_BUDGET_S": repr(float(cfg.budget_s)),
            "ARRL_SEED": str(seed),
            "ARRL_DEVICE": "cuda" if cfg.gpu is not None else "cpu",
            "ARRL_RUN_TOKEN": token,
        }
        if cfg.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(cfg.gpu)
        return env

    def _limits(self) -> list[str]:
        cfg = self.config
        return ["prlimit", f"--data={cfg.memory_mb << 20}", f"--fsize={cfg.max_file_mb << 20}", "--core=0", "--"]

    def _bwrap(self, data_split: str, work_dir: Path, work_writable: bool) -> list[str]:
        args = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
                "--hostname", "arrl-sandbox", "--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys",
                "--dev", "/dev", "--size", str(64 << 20), "--tmpfs", "/dev/shm",
                "--size", str(self.config.memory_mb << 20), "--tmpfs", "/tmp"]
        for d in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(d):
                args += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                args += ["--ro-bind", d, d]
        args += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
        for prefix in {sys.base_prefix, sys.prefix, str(Path(self.config.python).resolve().parent.parent)}:
            if not prefix.startswith("/usr"):
                args += ["--ro-bind", prefix, prefix]
        args += ["--ro-bind", str(self.env_dir), ENV_MOUNT]
        for item in self._data_items(data_split):
            args += ["--ro-bind", str(item), f"{DATA_MOUNT}/{item.name}"]
        args += ["--bind" if work_writable else "--ro-bind", str(work_dir), WORK_MOUNT, "--chdir", WORK_MOUNT]
        if self.config.gpu is not None:
            for dev in sorted(Path("/dev").glob("nvidia*")):
                args += ["--dev-bind", str(dev), str(dev)]
        return args + ["--remount-ro", "/dev", "--remount-ro", "/", "--"]

    def _data_view(self, run_dir: Path, split: str) -> Path:
        """isolation none: a directory of links showing one split (a courtesy, not a wall)."""
        view = run_dir / f"data-{split}"
        view.mkdir()
        for item in self._data_items(split):
            (view / item.name).symlink_to(item)
        return view

    def _spawn(self, cmd: list[str], split: str, run_dir: Path, work: Path, writable: bool, token: str, seed: int,
               **popen) -> subprocess.Popen:
        if self.isolation == "bwrap":
            env = self._env_vars(token, DATA_MOUNT, WORK_MOUNT, str(Path(ENV_MOUNT).parent), seed)
            full = self._limits() + self._bwrap(split, work, writable) + cmd
            cwd = None
        else:
            view = self._data_view(run_dir, split)
            env = self._env_vars(token, str(view), str(work), str(self.env_dir.parent), seed)
            full = self._limits() + cmd
            cwd = work
        now = os.nice(0)
        if self.config.nice is not None and self.config.nice != now and (self.config.nice > now or os.geteuid() == 0):
            full = ["nice", "-n", str(self.config.nice - now), *full]  # raising priority back: root only
        return subprocess.Popen(self.coreset.wrap(full), env=env, cwd=cwd, start_new_session=True, **popen)

    # ---- running ------------------------------------------------------------------
    def score(self, model: Path, run_dir: Path, split: str = "test", seed: int = 0) -> dict:
        """Evaluate a model that a run saved on another split of the environment (the sealed test
        split), in a fresh evaluator sandbox that sees only that split and the model; returns the
        evaluator's JSON ({"status", "test_bpb", ...})."""
        return _score_split(self, model, run_dir, split, seed)

    def run(self, source: str, run_dir: Path, seed: int = 0, env_hash: str = "", on_progress=None) -> Outcome:
        """Train `source` in a fresh `run_dir`, evaluate it, and return the Outcome."""
        cfg = self.config
        run_dir = Path(run_dir).resolve()
        work = run_dir / "work"
        work.mkdir(parents=True)
        (run_dir / "train.py").write_text(source)
        (work / "train.py").write_text(source)
        token = uuid.uuid4().hex
        work_path = WORK_MOUNT if self.isolation == "bwrap" else str(work)

        watched = parse_cores(cfg.cores) if cfg.cores else tuple(range(os.cpu_count() or 1))
        busy0, watch0 = _busy_s(watched), _thread_cpu_s()
        t_spawn_wall, t_spawn = time.time(), time.monotonic()
        evaluator = self._spawn(  # -P: the work dir (its cwd) is not on its module path
            [cfg.python, "-P", "-m", "env.evaluate", "--wait", "--model", f"{work_path}/{MODEL_FILE}", "--data-dir",
             DATA_MOUNT if self.isolation == "bwrap" else str(run_dir / "data-val"),
             "--device", "cuda" if cfg.gpu is not None else "cpu"],
            "val", run_dir, work, False, token + "-eval", seed,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(run_dir / "eval.log", "wb"))
        try:
            trainer = self._spawn([cfg.python, "-m", "env.launch", f"{work_path}/train.py"], "train", run_dir, work,
                                  True, token, seed, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT)
        except BaseException:
            _kill(evaluator, token + "-eval")  # the waiting evaluator must not outlive a failed start
            raise
        log = _Log(trainer.stdout, run_dir / "train.log", cfg.log_cap_bytes)

        killed_for, peak_rss, abort_reason = None, 0.0, ""
        cpu_seen: dict = {}  # (pid, start time) -> CPU seconds: the training tree's CPU time
        eval_seen: dict = {}  # the same for the waiting evaluator (its imports): the run's own, not foreign
        deadline = t_spawn + cfg.budget_s + cfg.grace_s
        next_watch, next_disk_check, next_progress = 0.0, 0.0, 0.0
        tail, seen_points = _ProgressTail(work / PROGRESS_FILE), 0
        exited = _ExitWatch(trainer)
        root_total = 0.0  # the trainer's CPU seconds with its reaped descendants', read from it as a zombie
        while True:
            now = time.monotonic()
            wake = min(next_watch, next_disk_check, deadline, next_progress if on_progress is not None else deadline)
            if exited.wait(wake - now):
                root_total = exited.final_cpu_s()
                break
            now = time.monotonic()
            if now >= next_watch:  # the process tree: its limits and its CPU time, WATCH_S apart
                next_watch = now + WATCH_S
                tree, eval_tree = _trees(trainer.pid, evaluator.pid)
                _cpu_times(tree, cpu_seen)
                _cpu_times(eval_tree, eval_seen)
                rss = _rss_mb(tree)
                peak_rss = max(peak_rss, rss)
                if rss > cfg.memory_mb:
                    killed_for = "memory"
                elif len(tree) > cfg.max_procs:
                    killed_for = "procs"
            if killed_for:
                break
            if now > deadline:
                killed_for = "timeout"
            elif now > next_disk_check:
                next_disk_check = now + DISK_S
                used, entries = _usage(work)
                if used > cfg.max_work_mb << 20 or entries > _MAX_WORK_ENTRIES:
                    killed_for = "disk"
            if killed_for:
                break
            if on_progress is not None and now >= next_progress:
                next_progress = now + PROGRESS_S
                curve = tail.poll()
                if len(curve) != seen_points:
                    seen_points = len(curve)
                    stop = on_progress(curve)
                    if stop:  # self-evaluation: a string saying why the run will not pay off
                        killed_for, abort_reason = "aborted", str(stop)
                        break
        exited.close()
        _kill(trainer, token)
        t_exit_wall, t_exit = time.time(), time.monotonic()
        busy1, watch1 = _busy_s(watched), _thread_cpu_s()
        log.join()
        exit_code = trainer.returncode
        prog = _read_progress(work / PROGRESS_FILE, run_dir / PROGRESS_FILE)

        status, message, val_bpb, eval_s = _train_status(killed_for, exit_code, prog, log.tail(20000), cfg)
        if killed_for == "aborted":
            message = f"aborted by self-evaluation: {abort_reason}"
        if status is None:
            t0 = time.monotonic()
            result = _await_eval(evaluator, cfg.eval_timeout_s)
            eval_s = time.monotonic() - t0
            (run_dir / "eval.json").write_text(json.dumps(result) + "\n")
            status, val_bpb, message = result["status"], result.get("val_bpb"), result.get("message", "")
        _kill(evaluator, token + "-eval")

        within = lambda t: t if t is not None and t_spawn_wall <= t <= t_exit_wall else None  # noqa: E731
        start, launch = within(prog.start_time), within(prog.launch_time)
        cpu_s = max(sum(cpu_seen.values()), root_total)  # each a lower bound of the tree's CPU time
        span = (t_exit - t_spawn) * len(watched)  # what the run's cores could give while it trained
        cpu_share = cpu_s / span if span > 0 else None
        own = cpu_s + sum(eval_seen.values()) + (watch1 - watch0)  # the run, its evaluator, this watchdog
        foreign = max(0.0, (busy1 - busy0) - own) / span if span > 0 and busy0 is not None and busy1 is not None \
            else None
        setup_s = start - t_spawn_wall if start else None
        train_s = t_exit_wall - start if start else None
        launch_s = launch - t_spawn_wall if launch else None
        return Outcome(
            status=status,
            val_bpb=val_bpb if status == "ok" else None,
            message=message,
            log_tail=log.tail(),
            timings=Timings(setup_s, launch_s, train_s, eval_s, time.monotonic() - t_spawn),
            isolation=self.isolation,
            env_hash=env_hash,
            exit_code=exit_code,
            peak_rss_mb=round(peak_rss, 1),
            steps=prog.curve[-1].step if prog.curve else None,
            tokens=getattr(prog, "tokens", None),
            cpu_s=round(cpu_s, 3),
            cpu_share=None if cpu_share is None else round(cpu_share, 4),
            foreign_share=None if foreign is None else round(foreign, 4),
            cores=self.coreset.cores,
            curve=tuple((p.elapsed, p.step, p.train_loss) for p in prog.curve),
        )


def _score_split(box: "ProcessSandbox", model: Path, run_dir: Path, split: str, seed: int) -> dict:
    """`ProcessSandbox.score`'s body (kept beside the run it mirrors)."""
    cfg = box.config
    run_dir = Path(run_dir).resolve()
    work = run_dir / "work"
    work.mkdir(parents=True)
    shutil.copyfile(model, work / MODEL_FILE)
    token = uuid.uuid4().hex
    bw = box.isolation == "bwrap"
    work_path = WORK_MOUNT if bw else str(work)
    evaluator = box._spawn(
        [cfg.python, "-P", "-m", "env.evaluate", "--wait", "--model", f"{work_path}/{MODEL_FILE}", "--data-dir",
         DATA_MOUNT if bw else str(run_dir / f"data-{split}"), "--split", split,
         "--device", "cuda" if cfg.gpu is not None else "cpu"],
        split, run_dir, work, False, token, seed,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(run_dir / "eval.log", "wb"))
    try:
        return _await_eval(evaluator, cfg.eval_timeout_s)
    finally:
        _kill(evaluator, token)


def _train_status(killed_for, exit_code, prog, log_tail: str, cfg: SandboxConfig):
    """(status, message, val_bpb, eval_s) for a run that ends before evaluation; status None = evaluate."""
    if killed_for == "aborted":
        return "aborted", "", None, None
    if killed_for == "timeout":
        return "timeout", f"killed at budget + grace ({cfg.budget_s:g} + {cfg.grace_s:g} s)", None, None
    if killed_for == "memory":
        return "oom", f"resident memory above the limit of {cfg.memory_mb} MB", None, None
    if killed_for == "procs":
        return "crash", f"more than {cfg.max_procs} processes", None, None
    if killed_for == "disk":
        return "crash", (f"work directory above the limit of {cfg.max_work_mb} MB or "
                         f"{_MAX_WORK_ENTRIES} entries"), None, None
    if prog.non_finite:
        return "nan", "training loss became non-finite", None, None
    if exit_code != 0:
        if any(m in log_tail for m in _OOM_MARKERS):
            return "oom", f"out of memory (exit code {exit_code})", None, None
        if exit_code == -signal.SIGXFSZ:
            return "crash", f"wrote a file larger than {cfg.max_file_mb} MB", None, None
        return "crash", f"exit code {exit_code}", None, None
    return None, "", None, None


def _await_eval(evaluator: subprocess.Popen, timeout_s: float) -> dict:
    """Tell the waiting evaluator to go; return its JSON result as soon as it is printed."""
    result: dict = {}

    def read() -> None:
        for line in evaluator.stdout:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and "status" in rec:
                result.update(rec)
                return

    try:
        evaluator.stdin.write(b"go\n")
        evaluator.stdin.flush()
    except OSError:
        pass  # it already died: the reader finds no result
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout_s)
    if reader.is_alive():
        return {"status": "invalid_metric", "message": f"evaluation took longer than {timeout_s:g} s"}
    if not result:
        code = evaluator.poll()
        return {"status": "invalid_metric", "message": f"evaluator died without a result (exit code {code})"}
    return result


def _tree(pid: int) -> list[psutil.Process]:
    return _trees(pid)[0]


def _trees(*roots: int) -> tuple[list[psutil.Process], ...]:
    """The process tree under each root pid, from one scan of the process table (psutil's
    children() scans all of it per call: the watchdog's largest cost on a run's cores)."""
    kids: dict[int, list[int]] = {}
    procs: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["ppid"]):  # psutil keeps these objects between calls
        procs[p.pid] = p
        kids.setdefault(p.info["ppid"], []).append(p.pid)
    out = []
    for root in roots:
        pids, i = [root], 0
        while i < len(pids):
            pids += kids.get(pids[i], [])
            i += 1
        out.append([procs[pid] for pid in pids if pid in procs])
    return tuple(out)


class _ExitWatch:
    """Waits for a child's exit without polling: on a pidfd where the kernel has them (Linux 5.3+),
    else (and for a container, whose exit code the engine reports) by `poll` every 50 ms. The pidfd
    reports the exit before the child is reaped, so its CPU time, and that of the descendants it
    reaped, can still be read."""

    def __init__(self, proc):
        self.proc = proc
        self.fd = None
        if isinstance(proc, subprocess.Popen):
            try:
                self.fd = os.pidfd_open(proc.pid)
            except (AttributeError, OSError):
                pass

    def wait(self, timeout: float) -> bool:
        """True once the child has exited (waiting at most `timeout` seconds for it)."""
        timeout = max(0.0, timeout)
        if self.fd is None:
            if self.proc.poll() is not None:
                return True
            time.sleep(min(timeout, 0.05))
            return self.proc.poll() is not None
        import select

        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        return bool(poller.poll(timeout * 1000))

    def final_cpu_s(self) -> float:
        """The exited, unreaped child's CPU seconds with its reaped descendants' (0.0 where unreadable)."""
        try:
            t = psutil.Process(self.proc.pid).cpu_times()
            return t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            return 0.0

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _busy_s(cores) -> float | None:
    """Seconds the kernel counts `cores` busy since boot (all but idle and iowait, steal included), from
    /proc/stat; None where it cannot be read. Busy time on a run's cores that is not the run's own is
    what other processes took from it (arrl.contention)."""
    want = {f"cpu{c}" for c in cores}
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for line in lines:
        f = line.split()
        if f and f[0] in want:
            v = [int(x) for x in f[1:9]]
            total += sum(v) - v[3] - v[4]  # user nice system idle iowait irq softirq steal
    return total / ticks


def _thread_cpu_s() -> float:
    """CPU seconds of the calling thread (the watchdog's own cost, which may land on the run's cores)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_THREAD)
    return r.ru_utime + r.ru_stime


def _cpu_times(procs: list[psutil.Process], seen: dict) -> None:
    """Note each process's CPU seconds so far (user + system; its own, not its children's, so nothing
    counts twice when a parent reaps a child). What a process used after the last look is lost:
    at most one poll interval of it."""
    for p in procs:
        try:
            t = p.cpu_times()
            seen[(p.pid, started(p.pid))] = t.user + t.system  # not create_time: a clock step moves it
        except psutil.Error:
            pass


def _rss_mb(procs: list[psutil.Process]) -> float:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


_MAX_WORK_ENTRIES = 100_000  # files and folders in the work dir; also bounds the cost of sizing it


def _usage(root: Path) -> tuple[int, int]:
    """(bytes on disk, entries) under `root`, links not followed; stops counting past _MAX_WORK_ENTRIES."""
    used = entries = 0
    stack = [str(root)]
    while stack and entries <= _MAX_WORK_ENTRIES:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    entries += 1
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        else:
                            used += entry.stat(follow_symlinks=False).st_blocks * 512
                    except OSError:
                        pass
        except OSError:
            pass
    return used, entries


def _read_progress(path: Path, copy: Path):
    """The run's progress records, read without trusting the file the sandbox wrote.

    Only a regular file is read, never through a link (a link to a host file would bring its
    lines into the curve; a FIFO would block the host forever), and only lines that
    `env.progress.read` can take without raising go on (it skips malformed records, but JSON
    nested past the recursion limit or numbers past a float's range raise): they are copied to
    `copy`, a file of the host's, which `env.progress.read` then parses.
    """
    from env import progress as progress_mod  # the env's own reader of its protocol

    chunks, size = [], 0
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        fd = -1
    try:
        while fd >= 0 and stat.S_ISREG(os.fstat(fd).st_mode) and size < 16 << 20:
            chunk = os.read(fd, min(1 << 20, (16 << 20) - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError:
        pass
    finally:
        if fd >= 0:
            os.close(fd)
    raw = b"".join(chunks)
    lines = [line for line in raw.splitlines()[:progress_mod.MAX_RECORDS] if _usable_record(line)]
    copy.write_bytes(b"".join(line + b"\n" for line in lines))
    return progress_mod.read(copy)


class _ProgressTail:
    """The run's learning curve while it trains, for early abort: each poll reads only what was
    appended since the last one (re-reading the whole file, as the final `_read_progress` does,
    grew with every step: a fast model's thousands of records, re-parsed twice a second, cost the
    run a tenth of its steps). The same distrust: a regular file only, never through a link,
    MAX_RECORDS lines and 16 MiB at most, only lines `_usable_record` accepts."""

    MAX_BYTES = 16 << 20

    def __init__(self, path: Path):
        from env import progress as progress_mod

        self.path, self.mod = path, progress_mod
        self.offset, self.partial, self.lines = 0, b"", 0
        self.curve: list = []

    def poll(self) -> list:
        if self.offset >= self.MAX_BYTES or self.lines >= self.mod.MAX_RECORDS:
            return self.curve
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return self.curve
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return self.curve
            os.lseek(fd, self.offset, os.SEEK_SET)
            chunk = os.read(fd, self.MAX_BYTES - self.offset)
        except OSError:
            return self.curve
        finally:
            os.close(fd)
        self.offset += len(chunk)
        *complete, self.partial = (self.partial + chunk).split(b"\n")
        for line in complete:
            if self.lines >= self.mod.MAX_RECORDS:
                break
            self.lines += 1
            if not _usable_record(line):
                continue
            rec = json.loads(line)
            if rec.get("event") == "step":
                try:
                    self.curve.append(self.mod.Point(float(rec["elapsed"]), int(rec["step"]),
                                                     float(rec["train_loss"]), self.mod._tokens(rec.get("tokens"))))
                except (ValueError, KeyError, TypeError, OverflowError):
                    continue
        return self.curve


def _usable_record(line: bytes) -> bool:
    """Whether a progress line is a JSON object whose fields env.progress.read converts without error."""
    if len(line) > 4096:
        return False
    try:
        rec = json.loads(line)
        if not isinstance(rec, dict):
            return False
        for key in ("time", "elapsed", "train_loss"):
            if key in rec:
                float(rec[key])
        if "step" in rec and not 0 <= int(rec["step"]) < 2 ** 63:  # a step count, and one the ledger can hold
            return False
    except Exception:  # noqa: BLE001 - RecursionError, OverflowError, ValueError, TypeError: all unusable
        return False
    return True



def _kill(proc: subprocess.Popen, token: str) -> None:
    """Kill the process, its group, its descendants, and any process carrying `token`.

    The token catches children that left the tree (double fork, setsid) when there is
    no pid namespace to tear down.
    """
    victims = {p.pid for p in _tree(proc.pid)}
    if not isinstance(proc, subprocess.Popen):
        proc.kill()  # a container: the engine kills it even where its uid is not ours to signal
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    needle = f"ARRL_RUN_TOKEN={token}".encode()
    for p in psutil.process_iter():
        try:
            if p.pid in victims or needle in Path(f"/proc/{p.pid}/environ").read_bytes().split(b"\0"):
                p.kill()
        except (psutil.Error, OSError):
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
