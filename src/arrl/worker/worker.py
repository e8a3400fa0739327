"""ExperimentWorker: runs one experiment at a time in a sandbox on its node and returns the result.

It receives the source (through the object store when it is a Ray actor), trains and
evaluates it in the configured sandbox in a scratch directory on its own disk, keeps the
live learning curve for `status()`, and returns a plain dict: the outcome plus the
artifacts the driver stores (log tail, curve). No shared filesystem is needed; the data
must be prepared on each node (the shakespeare profile is prepared on first use).
It imports no torch: the training runs in the sandbox's own interpreter.
"""

from __future__ import annotations

import dataclasses

import os
import shutil
import threading
import time
from pathlib import Path

from arrl import paths
from arrl.worker import abort as abort_mod
from arrl.worker import scratch as scratch_mod
from arrl.worker.abort import Rule
from arrl.worker.outcome import Outcome, SealedScore
from arrl.worker.sandbox import Sandbox, make
from arrl.worker.sandbox.config import SandboxConfig


def host_gpus_present() -> bool:
    return any(Path("/dev").glob("nvidia[0-9]*"))


KEEP_MODELS = 8  # models of `ok` runs a worker keeps for the sealed test split's evaluation (newest)


class UnsafeNode(RuntimeError):
    """This node may not run untrusted code the way the run asks (see ARRL_CLUSTER_NODE)."""


def check_node(backend: str, evaluator_isolation: str | None = None) -> None:
    """On a cluster node (ARRL_CLUSTER_NODE=1, set by the node image) the node container holds the
    host's Docker socket: untrusted code must not run in it unsandboxed. Training must use the docker
    sandbox, and the evaluator (which loads the untrusted model file there) needs bwrap."""
    if not os.environ.get("ARRL_CLUSTER_NODE"):
        return
    if backend == "process":
        raise UnsafeNode("on a cluster node set [workers] sandbox = \"docker\": the process sandbox would run "
                         "untrusted code in the node container, which holds the host's Docker socket")
    if evaluator_isolation == "none":
        raise UnsafeNode("the evaluator has no bwrap isolation in this node container; run it with --security-opt "
                         "seccomp=unconfined --security-opt apparmor=unconfined --security-opt systempaths=unconfined "
                         "(cluster.yaml does) so bubblewrap can make its namespaces")


class ExperimentWorker:
    def __init__(self, name: str, profile: str, sandbox: dict, backend: str = "process",
                 data_home: str | None = None, scratch: str | None = None, gpu_ids: list | None = None,
                 catalog: tuple = (), run: str = "", image: str = ""):
        self.name = name
        self.profile = profile
        self.backend = backend
        self.data_dir = paths.data_dir(profile, Path(data_home) if data_home else None)
        self._own_scratch = scratch is None  # a folder given by the caller is the caller's to remove
        self.scratch = Path(scratch) if scratch else scratch_mod.make(name, paths.scratch_dir())
        self.scratch.mkdir(parents=True, exist_ok=True)
        # Ray's GPU ids -> the host device the sandbox gets; fake GPUs (no /dev/nvidia*) run on CPU.
        self.ray_gpus = list(gpu_ids or [])
        gpu = str(self.ray_gpus[0]) if self.ray_gpus and host_gpus_present() else None
        sandbox = dict(sandbox)
        if sandbox.get("cores"):  # the plan was made on the launching machine; this node may have fewer cores
            from arrl.ops import cores as cores_mod

            if not set(cores_mod.parse(sandbox["cores"])) <= set(cores_mod.available()):
                sandbox["cores"] = ""  # unpinned: its outcomes say cores "" and contention is judged on throughput
        self.sandbox_config = SandboxConfig(**{**sandbox, "gpu": gpu})
        self._sandbox = None
        self.catalog = tuple(catalog)  # the simulated backend scores knobs from it
        self.run_name = run
        self.image = image  # docker sandbox image ("" = $ARRL_SANDBOX_IMAGE, else the host-mount image)
        self._lock = threading.Lock()
        self.current: dict | None = None  # exp id, started, budget, last progress record
        self.done = 0
        self.kept: dict[int, tuple[Path | str, int]] = {}  # exp id -> (its model, or its source when simulated; seed)
        self.busy_s = 0.0
        self.started = time.time()
        from arrl.ops.metrics import WorkerMetrics

        self.metrics = WorkerMetrics(run, name)
        check_node(backend)  # refuse at start-up, not at the first experiment
        if backend == "docker":
            self.sandbox()  # builds the image once and sweeps containers a dead predecessor left

    def sandbox(self) -> Sandbox:
        """This worker's sandbox, made on first use (for the process and Docker backends, after the
        node's data is checked)."""
        if self._sandbox is None:
            if self.backend != "simulated":
                check_node(self.backend)
                self._ensure_data()
            # labels let a restarted worker sweep the containers its dead predecessor left
            self._sandbox = make(self.backend, paths.env_dir(), self.data_dir, self.sandbox_config,
                                 catalog=self.catalog, labels={"arrl.run": self.run_name, "arrl.worker": self.name},
                                 image=self.image or None)
            if self.backend == "docker":
                check_node(self.backend, self._sandbox.isolation)
        return self._sandbox

    def _ensure_data(self) -> None:
        from env import manifest

        if (self.data_dir / "manifest.json").is_file():
            try:
                if manifest.has_test_split(manifest.read(self.data_dir)):
                    return
            except manifest.DataError:
                pass
            if self.profile != "shakespeare":  # prepared by an older arrl, without the sealed test split
                raise RuntimeError(f"{self.name}: the data for profile {self.profile!r} at {self.data_dir} has no "
                                   f"test split (prepared by an older arrl); run `arrl prepare --profile "
                                   f"{self.profile}` on every node")
        if self.profile != "shakespeare":
            raise RuntimeError(f"{self.name}: no prepared data for profile {self.profile!r} at {self.data_dir}; run "
                               f"`arrl prepare --profile {self.profile}` on every node")
        from env import prepare

        prepare.prepare("shakespeare", self.data_dir)
        manifest.read(self.data_dir)

    def env_hash(self) -> str:
        from env import manifest

        if self.backend == "simulated":
            return "simulated"
        self.sandbox()
        return manifest.env_hash(manifest.read(self.data_dir))

    def run(self, exp_id: int, source: str, seed: int, abort: Rule | None = None) -> Outcome:
        """Train and evaluate `source`; returns its Outcome (with its log tail and learning curve).

        `abort` (self-evaluation): the run is stopped (status `aborted`) when its training loss trails the
        incumbent's runs (`abort.reference`) at the same elapsed time beyond the rule's bar.
        """
        sandbox = self.sandbox()
        run_dir = self.scratch / f"{exp_id:06d}-{int(time.time() * 1000) % 10**8}"
        t0 = time.time()
        with self._lock:
            self.current = {"exp": exp_id, "started": t0, "budget_s": self.sandbox_config.budget_s, "last": None}

        check = None
        if abort is not None:
            check = abort_mod.Checker(abort, self.sandbox_config.budget_s)

        def on_progress(curve):
            with self._lock:
                if self.current is not None and curve:
                    self.current["last"] = list(abort_mod.points(curve[-1:])[0])  # [elapsed s, step, loss]
            if check is None or not curve:
                return None
            v = check(abort_mod.points(curve))
            return v.reason if v is not None and v.abort else None

        try:
            outcome = sandbox.run(source, run_dir, seed=seed, env_hash=self.env_hash(), on_progress=on_progress)
        finally:
            with self._lock:
                self.current = None
                self.busy_s += time.time() - t0
            self.done += 1
            self.metrics.update(self.busy_s, time.time() - self.started)
        if outcome.status == "ok":
            saved = run_dir / "work" / "model.pt2"
            if saved.is_file():
                outcome = dataclasses.replace(outcome, model_bytes=saved.stat().st_size)
            self._keep(exp_id, run_dir, source, seed)
        shutil.rmtree(run_dir, ignore_errors=True)
        return outcome

    def _keep(self, exp_id: int, run_dir: Path, source: str, seed: int) -> None:
        """Keep an `ok` run's model (the newest KEEP_MODELS), so an incumbent's runs can be scored on the test split."""
        if self.backend == "simulated":
            self.kept[exp_id] = (source, seed)
        else:
            model = run_dir / "work" / "model.pt2"
            dest = self.scratch / "models" / f"{exp_id:06d}.pt2"
            dest.parent.mkdir(exist_ok=True)
            try:
                shutil.move(str(model), dest)
            except OSError:
                return
            self.kept[exp_id] = (dest, seed)
        while len(self.kept) > KEEP_MODELS:
            old, _ = self.kept.pop(min(self.kept))
            if isinstance(old, Path):
                old.unlink(missing_ok=True)

    def score_test(self, exp_id: int) -> SealedScore:
        """The sealed test split's score of experiment `exp_id`'s model, in a separate evaluation that sees
        only the test split. `missing` when this worker no longer holds that model (evicted, or a worker
        started after it ran)."""
        if exp_id not in self.kept:
            return SealedScore("missing", None, f"{self.name} does not hold the model of experiment {exp_id}")
        held, seed = self.kept[exp_id]
        if self.backend == "simulated":
            from arrl.worker.sandbox.simulated import test_value

            r = test_value(held, self.catalog, seed)
        else:
            run_dir = self.scratch / f"test-{exp_id:06d}-{int(time.time() * 1000) % 10**8}"
            try:
                r = self.sandbox().score(held, run_dir, "test", seed)
            finally:
                shutil.rmtree(run_dir, ignore_errors=True)
        return SealedScore(r.get("status", "invalid_metric"), r.get("test_bpb"), str(r.get("message", ""))[:500])

    def close(self) -> int:
        """The end of this worker (the launch calls it before killing the actor): its sandbox containers on
        its node are removed, and its scratch folder with the models it kept. Returns the containers removed."""
        box = self._sandbox
        removed = box.sweep() if box is not None else 0
        self.kept.clear()
        if self._own_scratch:
            scratch_mod.remove(self.scratch)
        return removed

    def status(self) -> dict:
        with self._lock:
            cur = dict(self.current) if self.current else None
        busy = self.busy_s + (time.time() - cur["started"] if cur else 0.0)
        self.metrics.update(busy, time.time() - self.started)
        return {"name": self.name, "current": cur, "done": self.done, "busy_s": self.busy_s,
                "alive_s": time.time() - self.started, "ray_gpus": self.ray_gpus,
                "device": self.sandbox_config.gpu or "cpu"}

    def __repr__(self) -> str:
        # Ray's dashboard shows the repr taken when the actor started; later calls show live state
        gpu = ",".join(str(g) for g in self.ray_gpus) or "-"
        cur = self.current
        if cur:
            return (f"ExperimentWorker({self.name}, gpu={gpu}, {self.backend}, exp={cur['exp']}, "
                    f"{time.time() - cur['started']:.0f}/{cur['budget_s']:.0f} s)")
        return f"ExperimentWorker({self.name}, gpu={gpu}, {self.backend}, idle, done={self.done})"
