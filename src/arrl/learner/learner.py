"""The learner: PPO updates of the policy's LoRA adapter from trajectory batches.

`Learner` owns an RLlib `LearnerGroup` of `TokenPPOLearner`s over a `LoraPolicyModule`
(num_learners = 0: one learner in this process; > 1: that many learner actors, DDP). One
`update(batch)` call, with `batch` an Arrow record batch of samples (arrl.learner.trajectory):

  1. drops samples whose adapter version is more than `max_staleness` versions behind the
     version being trained (counted, and their staleness reported);
  2. rebuilds each answer's grammar mask (arrl.learner.grammar);
  3. scores the batch once without gradients: reference logprobs (adapter disabled) and,
     in GAE mode, state values;
  4. computes advantages (arrl.learner.advantages: group-relative or GAE, normalised);
  5. runs `epochs` passes of the PPO loss through `LearnerGroup.update`;
  6. bumps the version, saves the adapter with PEFT (files as bytes, put in the object
     store for the policy server) and checkpoints the learner state to
     `<ckpt_dir>/ckpt-<version>/` (LoRA, value head, optimizer, version).

`restore(version)` loads a checkpoint: a resumed run continues from the version its
ledger recorded. The class is plain Python; arrl.actors wraps it as the Ray actor
`arrl/<run>/learner`.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from arrl.learner import advantages as adv_mod
from arrl.config import LearnerSection, resolve
from arrl.learner.grammar import GrammarError, Masks
from arrl.learner.trajectory import collate

# the [learner] config section's defaults (one source of truth), with GPUs resolved to none
DEFAULTS = {**LearnerSection().settings(0.0), "keep_checkpoints": 2}


@dataclass(frozen=True)
class UpdateResult:
    """What one update returns. `files` (the adapter's files) stays in the learner's process: its Ray
    actor replaces them with `files_ref` (an object-store reference) and `adapter_sha256`."""
    version: int  # the adapter version after the update (unchanged when nothing was usable)
    updated: bool
    samples_in: int
    dropped_stale: int
    dropped_invalid: int
    staleness: list  # per sample used, versions behind
    exp_ids: list  # the samples used
    update_s: float
    metrics: dict = field(default_factory=dict)  # RLlib's learner metrics (total_loss, kl, clip_fraction, ...)
    files: dict | None = None
    files_ref: object = None
    adapter_sha256: str | None = None
    reward_mean: float | None = None
    advantage_abs_mean: float | None = None
    tokens: int | None = None
    decisions: int | None = None

    INFO = ("samples_in", "dropped_stale", "dropped_invalid", "tokens", "decisions", "reward_mean",
            "advantage_abs_mean", "update_s", "metrics")  # what the ledger's policy_versions.info keeps

    def info(self) -> dict:
        return {k: getattr(self, k) for k in self.INFO}


class LearnerError(Exception):
    """The learner cannot be built or restored; the message names the cause."""


def _spaces():
    import gymnasium as gym

    # RLModuleSpec insists on spaces; the module reads token arrays from the batch instead.
    return gym.spaces.Box(-1.0, 1.0, (1,), np.float32), gym.spaces.Discrete(2)


class Learner:
    def __init__(self, model_dir: str, settings: dict | None = None, ckpt_dir: str | None = None):
        s = {**DEFAULTS, **(settings or {})}
        unknown = set(s) - set(DEFAULTS)
        if unknown:
            raise LearnerError(f"unknown learner settings {sorted(unknown)}")
        if s["advantage"] not in ("group", "gae"):
            raise LearnerError(f"advantage {s['advantage']!r} is not one of group, gae")
        self.s = s
        self.model_dir = str(model_dir)
        self.ckpt_dir = Path(ckpt_dir or tempfile.mkdtemp(prefix="arrl-learner-"))
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        import torch

        # Ray sets OMP_NUM_THREADS=1 in actors; a learner on CPU wants the cores (unset: all, arrl.config.resolve)
        torch.set_num_threads(resolve.learner_threads(s["threads"]))
        torch.manual_seed(int(s["seed"]))
        self.gae = s["advantage"] == "gae"
        self.group = self._build()
        from transformers import AutoConfig

        self.vocab_size = AutoConfig.from_pretrained(self.model_dir).vocab_size
        self.masks = Masks(self.model_dir, self.vocab_size)
        self.version = 0  # the adapter version the next samples come from; update() makes version + 1

    def _build(self):
        from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
        from ray.rllib.core.rl_module.rl_module import RLModuleSpec

        from arrl.learner.ppo import TokenPPOLearner
        from arrl.learner.rl_module import LoraPolicyModule

        s = self.s
        obs, act = _spaces()
        spec = RLModuleSpec(module_class=LoraPolicyModule, observation_space=obs, action_space=act,
                            model_config={"model_dir": self.model_dir, "rank": s["rank"], "alpha": s["alpha"],
                                          "value_head": self.gae, "seed": s["seed"]})
        cfg = (AlgorithmConfig()
               .framework("torch")
               .rl_module(rl_module_spec=spec)
               .training(lr=s["lr"], grad_clip=s["grad_clip"] or None, grad_clip_by="global_norm")
               .learners(num_learners=s["num_learners"], num_gpus_per_learner=s["num_gpus"],
                         learner_class=TokenPPOLearner,
                         learner_config_dict={k: s[k] for k in ("ratio_clip", "kl_coef", "entropy_coef", "vf_coef",
                                                                       "value_lr", "mmap_mb")}))
        if s["num_learners"] > 1:
            cfg.torch_ddp_kwargs = {"find_unused_parameters": False}
        return cfg.build_learner_group(rl_module_spec=spec)

    # -- one update --------------------------------------------------------------------------
    def update(self, batch) -> UpdateResult:
        """Train on `batch` (Arrow record batch); returns the new version, metrics, counts and adapter files."""
        t0 = time.perf_counter()
        d = batch.to_pydict()
        n_in = batch.num_rows
        stale = [self.version - v for v in d["adapter_version"]]
        keep = [i for i, st in enumerate(stale) if 0 <= st <= self.s["max_staleness"]]
        masks, kept, invalid = [], [], 0
        for i in keep:
            try:
                masks.append(self.masks.masks(d["constraint"][i], d["response_ids"][i]))
                kept.append(i)
            except GrammarError:
                invalid += 1
        info = {"samples_in": n_in, "dropped_stale": n_in - len(keep), "dropped_invalid": invalid,
                "staleness": [stale[i] for i in kept], "exp_ids": [d["exp_id"][i] for i in kept]}
        if not kept:
            return UpdateResult(**info, version=self.version, updated=False, update_s=time.perf_counter() - t0)
        sub = batch.take(kept)
        arrays = collate(sub, masks, self.vocab_size)
        scored = self._score(arrays)
        arrays["ref_logp"] = scored["ref_logp"].astype(np.float32)
        rewards = np.asarray(sub.column("reward").to_pylist(), dtype=np.float64)
        if self.gae:
            order = np.argsort(np.asarray(sub.column("exp_id").to_pylist()), kind="stable")
            a = np.zeros(len(rewards))
            ret = np.zeros(len(rewards))
            a[order], ret[order] = adv_mod.gae(rewards[order], scored["value"][order], self.s["gamma"],
                                               self.s["lam"])
            arrays["returns"] = ret.astype(np.float32)
            a = adv_mod.normalise(a)
        else:  # a fixed scale replaces the normalisation, which would blow up tiny differences
            scale = self.s["advantage_scale"]
            a = adv_mod.group_relative(rewards, sub.column("group").to_pylist(), scale=scale or None)
            if not scale:
                a = adv_mod.normalise(a)
        arrays["advantages"] = a.astype(np.float32)
        metrics = self._train(arrays)
        self.version += 1
        files = self.adapter_files()
        self.checkpoint()
        return UpdateResult(**info, version=self.version, updated=True, metrics=metrics, files=files,
                            advantage_abs_mean=float(np.abs(a).mean()), reward_mean=float(rewards.mean()),
                            tokens=int(arrays["valid"].sum()), decisions=int(arrays["decision"].sum()),
                            update_s=time.perf_counter() - t0)

    def _score(self, arrays: dict) -> dict:
        gae = self.gae
        return _first(self.group.foreach_learner(lambda lrn: lrn.score(arrays, gae)))

    def _train(self, arrays: dict) -> dict:
        from ray.rllib.core import DEFAULT_MODULE_ID
        from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

        n = len(arrays["advantages"])
        mab = MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch(arrays)}, env_steps=n)
        mb = self.s["minibatch_size"]
        res = self.group.update(batch=mab, num_epochs=int(self.s["epochs"]), minibatch_size=mb or None,
                                shuffle_batch_per_epoch=bool(mb))
        return _flatten(res[0].get(DEFAULT_MODULE_ID, {}) if isinstance(res, list) else res[DEFAULT_MODULE_ID])

    # -- adapter and state ------------------------------------------------------------------------
    def adapter_files(self) -> dict[str, bytes]:
        """The current adapter as PEFT files {name: bytes} (saved by the first learner, on its node)."""
        from arrl.policy.adapters import adapter_files

        def save(lrn):
            with tempfile.TemporaryDirectory(prefix="arrl-adapter-") as tmp:
                lrn.save_adapter(tmp)
                return adapter_files(tmp)

        return _first(self.group.foreach_learner(save))

    def state(self) -> dict:
        return {"version": self.version, "learner": self.group.get_state(), "settings": self.s}

    def checkpoint(self) -> Path:
        """Write ckpt-<version>/ atomically; keep the newest `keep_checkpoints`."""
        final = self.ckpt_dir / f"ckpt-{self.version:06d}"
        tmp = self.ckpt_dir / f".tmp-{self.version:06d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        with open(tmp / "state.pkl", "wb") as f:
            pickle.dump(self.state(), f, protocol=5)
        adapter = tmp / "adapter"
        adapter.mkdir()
        for name, data in self.adapter_files().items():
            (adapter / name).write_bytes(data)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in sorted(self.ckpt_dir.glob("ckpt-*"))[:-int(self.s["keep_checkpoints"])]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def checkpoints(self) -> list[int]:
        return sorted(int(p.name.split("-")[1]) for p in self.ckpt_dir.glob("ckpt-*") if (p / "state.pkl").exists())

    def restore(self, version: int) -> None:
        """Load ckpt-<version> (version 0: the fresh adapter)."""
        if version == 0:
            return
        path = self.ckpt_dir / f"ckpt-{version:06d}" / "state.pkl"
        if not path.is_file():
            raise LearnerError(f"{path}: no learner checkpoint for adapter version {version} (have "
                               f"{self.checkpoints() or 'none'})")
        self.version = int(self._load_state(path)["version"])

    def warm_start(self, ckpt: str | Path) -> None:
        """Start from another run's checkpoint (its LoRA weights and optimizer state): this run's version 1,
        checkpointed here, so that a resume restores it like any other version."""
        if self.version:
            raise LearnerError(f"a warm start needs a fresh learner; this one is at version {self.version}")
        self._load_state(Path(ckpt) / "state.pkl")
        self.version = 1
        self.checkpoint()

    def _load_state(self, path: Path) -> dict:
        try:
            with open(path, "rb") as f:
                st = pickle.load(f)
        except FileNotFoundError:
            raise LearnerError(f"{path}: no such learner checkpoint") from None
        except (pickle.UnpicklingError, EOFError, OSError) as e:
            raise LearnerError(f"{path}: unreadable learner checkpoint ({e})") from None
        self.group.set_state(st["learner"])
        return st

    def shutdown(self) -> None:
        self.group.shutdown()


def _first(results):
    """The first learner's answer to a `foreach_learner` call (its error re-raised)."""
    res = next(iter(results)).get()
    if isinstance(res, BaseException):
        raise res
    return res


def _flatten(d, prefix: str = "") -> dict[str, float]:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
            continue
        if hasattr(v, "peek"):
            v = v.peek()
        try:
            out[key] = float(v)
        except (TypeError, ValueError):
            continue
    return out
