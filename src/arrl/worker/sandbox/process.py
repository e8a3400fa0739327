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
- both: the run's cores (`cores`, arrl.ops.placement) confine the training process and the
  evaluator with a cpuset cgroup where the machine allows it (arrl.ops.cores), and the CPU time
  the training tree gets is measured from outside (the contention check, arrl.driver.contention);
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

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from arrl.ops.cores import CoreSet, parse as parse_cores
from arrl.worker.outcome import Outcome, Timings
from arrl.worker.sandbox.config import (DATA_MOUNT, DISK_S, ENV_MOUNT, MODEL_FILE, PROGRESS_FILE, PROGRESS_S, WATCH_S,
                                        WORK_MOUNT, SandboxConfig, bwrap_available)
from arrl.worker.sandbox.log import CappedLog
from arrl.worker.sandbox.progress import ProgressTail, read_progress
from arrl.worker.sandbox.watch import (MAX_WORK_ENTRIES, ExitWatch, busy_s, cpu_times, kill, rss_mb, thread_cpu_s,
                                       trees, usage)

_OOM_MARKERS = ("MemoryError", "out of memory", "Unable to allocate", "std::bad_alloc")


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

    def sweep(self) -> int:
        """Nothing to sweep: a process run cannot outlive its sandbox (see `kill`)."""
        return 0

    def close(self) -> None:
        """Release the run's cgroup (arrl.ops.cores); a sandbox is used for many runs, then closed."""
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
        cfg = self.config
        run_dir = Path(run_dir).resolve()
        work = run_dir / "work"
        work.mkdir(parents=True)
        shutil.copyfile(model, work / MODEL_FILE)
        token = uuid.uuid4().hex
        bw = self.isolation == "bwrap"
        work_path = WORK_MOUNT if bw else str(work)
        evaluator = self._spawn(
            [cfg.python, "-P", "-m", "env.evaluate", "--wait", "--model", f"{work_path}/{MODEL_FILE}", "--data-dir",
             DATA_MOUNT if bw else str(run_dir / f"data-{split}"), "--split", split,
             "--device", "cuda" if cfg.gpu is not None else "cpu"],
            split, run_dir, work, False, token, seed,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(run_dir / "eval.log", "wb"))
        try:
            return await_eval(evaluator, cfg.eval_timeout_s)
        finally:
            kill(evaluator, token)

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
        busy0, watch0 = busy_s(watched), thread_cpu_s()
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
            kill(evaluator, token + "-eval")  # the waiting evaluator must not outlive a failed start
            raise
        log = CappedLog(trainer.stdout, run_dir / "train.log", cfg.log_cap_bytes)

        killed_for, peak_rss, abort_reason = None, 0.0, ""
        cpu_seen: dict = {}  # (pid, start time) -> CPU seconds: the training tree's CPU time
        eval_seen: dict = {}  # the same for the waiting evaluator (its imports): the run's own, not foreign
        deadline = t_spawn + cfg.budget_s + cfg.grace_s
        next_watch, next_disk_check, next_progress = 0.0, 0.0, 0.0
        tail, seen_points = ProgressTail(work / PROGRESS_FILE), 0
        exited = ExitWatch(trainer)
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
                tree, eval_tree = trees(trainer.pid, evaluator.pid)
                cpu_times(tree, cpu_seen)
                cpu_times(eval_tree, eval_seen)
                rss = rss_mb(tree)
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
                used, entries = usage(work)
                if used > cfg.max_work_mb << 20 or entries > MAX_WORK_ENTRIES:
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
        kill(trainer, token)
        t_exit_wall, t_exit = time.time(), time.monotonic()
        busy1, watch1 = busy_s(watched), thread_cpu_s()
        log.join()
        exit_code = trainer.returncode
        prog = read_progress(work / PROGRESS_FILE, run_dir / PROGRESS_FILE)

        status, message, val_bpb, eval_s = _train_status(killed_for, exit_code, prog, log.tail(20000), cfg)
        if killed_for == "aborted":
            message = f"aborted by self-evaluation: {abort_reason}"
        if status is None:
            t0 = time.monotonic()
            result = await_eval(evaluator, cfg.eval_timeout_s)
            eval_s = time.monotonic() - t0
            (run_dir / "eval.json").write_text(json.dumps(result) + "\n")
            status, val_bpb, message = result["status"], result.get("val_bpb"), result.get("message", "")
        kill(evaluator, token + "-eval")

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
                         f"{MAX_WORK_ENTRIES} entries"), None, None
    if prog.non_finite:
        return "nan", "training loss became non-finite", None, None
    if exit_code != 0:
        if any(m in log_tail for m in _OOM_MARKERS):
            return "oom", f"out of memory (exit code {exit_code})", None, None
        if exit_code == -signal.SIGXFSZ:
            return "crash", f"wrote a file larger than {cfg.max_file_mb} MB", None, None
        return "crash", f"exit code {exit_code}", None, None
    return None, "", None, None


def await_eval(evaluator: subprocess.Popen, timeout_s: float) -> dict:
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
