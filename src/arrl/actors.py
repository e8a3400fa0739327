"""The one place where arrl's plain classes become Ray actors.

Each factory takes the plain class's arguments plus placement options and returns an actor
handle. Actors are named `arrl/<run>/<role>` so the Ray dashboard lists them by run.
"""

from __future__ import annotations

import sys
import time

import ray

from arrl.policy.server import PolicyConfig, PolicyServer
from arrl.worker.worker import ExperimentWorker


def actor_name(run: str, role: str) -> str:
    return f"arrl/{run}/{role}"


NAME_RELEASE_S = 60.0  # how long a replacement waits for Ray to release a dead actor's name


def named(create, name: str):
    """`create()` an actor named `name`, waiting while a dead predecessor still holds the name: a process
    killed from outside (SIGKILL, OOM killer) is seen dead by the caller before Ray's GCS frees its name."""
    deadline = time.monotonic() + NAME_RELEASE_S
    while True:
        try:
            return create()
        except ray.exceptions.ActorAlreadyExistsError:
            try:
                old = ray.get_actor(name)
                ray.kill(old, no_restart=True)  # make sure it is gone (a no-op on a dead actor)
            except ValueError:
                pass  # released meanwhile
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def wait_for(ref, desc: str, progress: bool = True):
    """ray.get(ref) with a progress bar of the elapsed seconds (the actor's own output stays on its node).
    Where stderr is not a terminal (a log file, a job's output) one line says when it was ready instead."""
    return wait_all({ref: desc}, progress)[0]


def wait_all(starting: dict, progress: bool = True) -> list:
    """The values of several refs ({ref: what it is}) that are awaited together, such as the policy server and
    the learner starting side by side, in the order given. A ref that raises is raised at once."""
    from tqdm import tqdm

    tty = progress and sys.stderr.isatty()
    t0 = time.monotonic()
    out, pending = {}, dict(starting)
    with tqdm(desc=" + ".join(starting.values()), unit="s", total=None, disable=not tty,
              bar_format="{desc}: {elapsed}") as bar:
        while pending:
            ready, _ = ray.wait(list(pending), timeout=1.0)
            for ref in ready:
                out[ref] = ray.get(ref)
                desc = pending.pop(ref)
                if progress and not tty:
                    print(f"{desc}: ready after {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
            bar.update()
    return [out[ref] for ref in starting]


class _PolicyActor(PolicyServer):
    def __repr__(self) -> str:  # the dashboard shows the repr taken when the actor started
        state = "up" if self.server.alive() else ("starting" if not self.server.starts else "down")
        gpus = ",".join(str(g) for g in ray.get_gpu_ids()) or "-"
        return f"PolicyServer({self.name}, gpu={gpus}, v{self.version}, {state}, restarts={self.restarts})"

    def start(self) -> int:  # the plain class returns self, which must not travel back to the caller
        super().start()
        return self.version


def policy_server(config: PolicyConfig, run: str = "default", num_gpus: float = 0, num_cpus: float = 1,
                  max_concurrency: int = 16, workdir: str | None = None, progress: bool = False):
    """A PolicyServer actor, started (vLLM up) before this returns its handle.

    Adapter bytes are passed as an ObjectRef: `actor.load_adapter.remote(v, ray.put(files))`
    (Ray resolves a top-level ref argument to the value on the actor's node). Threaded
    (`max_concurrency`) so proposals run concurrently and a restart can serve them all.
    """
    handle, started = start_policy_server(config, run, num_gpus, num_cpus, max_concurrency, workdir, progress)
    wait_for(started, POLICY_STARTING, progress)
    return handle


POLICY_STARTING = "policy server starting (model, vLLM)"
LEARNER_STARTING = "learner starting (model, LoRA, RLlib)"


def start_policy_server(config: PolicyConfig, run: str = "default", num_gpus: float = 0, num_cpus: float = 1,
                        max_concurrency: int = 16, workdir: str | None = None, progress: bool = False):
    """`policy_server` without the wait: the handle, and a ref that is ready once vLLM is up."""
    cls = ray.remote(_PolicyActor)
    handle = cls.options(name=actor_name(run, "policy"), num_gpus=num_gpus, num_cpus=num_cpus,
                         max_concurrency=max_concurrency).remote(config, workdir, progress)
    return handle, handle.start.remote()


class _LearnerActor:
    """arrl.learner.learner.Learner in an actor; adapter files leave it as object refs (no copy through the driver)."""

    def __init__(self, model: str, settings: dict, ckpt_dir: str, cores: str = ""):
        from arrl.ops import cores as cores_mod
        from arrl.policy import models
        from arrl.learner.learner import Learner

        if cores:  # arrl.ops.placement: the learner's cores, and a torch thread per core
            cores_mod.pin_self(cores)
            settings = {**settings, "threads": settings.get("threads") or len(cores_mod.parse(cores))}
        self.inner = Learner(models.resolve(model, progress=False), settings, ckpt_dir)

    def __repr__(self) -> str:
        s = self.inner.s if hasattr(self, "inner") else {}
        gpus = ",".join(str(g) for g in ray.get_gpu_ids()) or "-"
        return (f"Learner(v{getattr(getattr(self, 'inner', None), 'version', '?')}, gpu={gpus}, {s.get('advantage')}, "
                f"learners={s.get('num_learners')})")

    def ready(self) -> int:
        return self.inner.version

    def update(self, batch):
        """The learner's UpdateResult, its adapter files sent through the object store instead."""
        import dataclasses

        from arrl.policy.adapters import sha256_files

        res = self.inner.update(batch)
        if res.files:
            res = dataclasses.replace(res, adapter_sha256=sha256_files(res.files), files_ref=ray.put(res.files))
        return dataclasses.replace(res, files=None)

    def restore(self, version: int):
        self.inner.restore(version)
        return ray.put(self.inner.adapter_files())

    def warm_start(self, ckpt: str):
        """Version 1 from another run's checkpoint: (its adapter files as a ref, their sha256)."""
        from arrl.policy.adapters import sha256_files

        self.inner.warm_start(ckpt)
        files = self.inner.adapter_files()
        return ray.put(files), sha256_files(files)

    def adapter(self):
        return ray.put(self.inner.adapter_files())


def learner(run: str, model: str, settings: dict, ckpt_dir: str, num_cpus: float = 1, progress: bool = False,
            cores: str = ""):
    """The learner actor `arrl/<run>/learner`, built (model loaded) before this returns.

    With num_learners = 0 the one learner lives in this actor and holds `num_gpus`; with more,
    RLlib starts that many learner actors (`num_gpus` each) and this one only coordinates.
    """
    handle, ready = start_learner(run, model, settings, ckpt_dir, num_cpus, cores)
    wait_for(ready, LEARNER_STARTING, progress)
    return handle


def start_learner(run: str, model: str, settings: dict, ckpt_dir: str, num_cpus: float = 1, cores: str = ""):
    """`learner` without the wait: the handle, and a ref that is ready once the model is loaded."""
    gpus = settings.get("num_gpus", 0.0) if not settings.get("num_learners") else 0.0
    cls = ray.remote(_LearnerActor)
    name = actor_name(run, "learner")
    handle = named(lambda: cls.options(name=name, num_gpus=gpus, num_cpus=num_cpus,
                                       max_concurrency=1).remote(model, settings, ckpt_dir, cores), name)
    return handle, handle.ready.remote()


class _WorkerActor(ExperimentWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, gpu_ids=ray.get_gpu_ids(), **kwargs)


def experiment_worker(run: str, index: int, profile: str, sandbox: dict, backend: str = "process",
                      num_gpus: float = 1, num_cpus: float = 0, data_home: str | None = None, catalog: tuple = (),
                      image: str = ""):
    """An ExperimentWorker actor `arrl/<run>/worker-<index>` holding `num_gpus` (fake GPUs work in tests).

    Threaded with 2 slots: `run` and `status` can be called at the same time.
    """
    cls = ray.remote(_WorkerActor)
    name = actor_name(run, f"worker-{index}")
    return named(lambda: cls.options(name=name, num_gpus=num_gpus, num_cpus=num_cpus, max_concurrency=2,
                                     max_restarts=0).remote(f"worker-{index}", profile, sandbox, backend, data_home,
                                                            catalog=catalog, run=run, image=image), name)
