"""Token-level PPO as an RLlib `TorchLearner` for `LoraPolicyModule`.

Per response token t of proposal i (only decision tokens count, see arrl.learner.trajectory):

    ratio    = exp(logp - logp_behaviour)                  behaviour = what the server reported
    policy   = -min(ratio * A_i, clip(ratio, 1-eps, 1+eps) * A_i)
    kl       = exp(logp_ref - logp) - (logp_ref - logp) - 1   (k3 estimator, >= 0; ref = adapter off)
    loss     = mean(policy) + kl_coef * mean(kl) - entropy_coef * mean(entropy)
               + vf_coef * mean_i((V_i - R_i)^2)             (value head only, GAE mode)

`ppo_loss` is the formula on plain tensors (tested against a hand computation); the learner
feeds it from `forward_train` and logs loss, KL, clip fraction, entropy, value loss and
explained variance. The optimizer sees only trainable tensors (LoRA, value head); gradient
clipping is RLlib's (`grad_clip`, global norm).
"""

from __future__ import annotations

import ctypes

import torch
from ray.rllib.core.learner.torch.torch_learner import TorchLearner

from arrl.config import LearnerSection

DEFAULTS = {**LearnerSection().settings(0.0), "weight_decay": 0.0}


def _mean(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (x * w).sum() / w.sum().clamp(min=1.0)


def ppo_loss(logp, behaviour_logp, ref_logp, advantages, weights, entropy, clip: float, kl_coef: float,
             entropy_coef: float, vf_coef: float = 0.0, values=None, returns=None) -> dict:
    """The PPO objective on (B, T) token tensors; `weights` selects the tokens that count."""
    adv = advantages.unsqueeze(-1).expand_as(logp)
    w = weights
    ratio = torch.exp((logp - behaviour_logp) * (w > 0))
    clipped = torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    policy = -torch.minimum(ratio * adv, clipped * adv)
    d = (ref_logp - logp) * (w > 0)
    kl = torch.exp(d) - d - 1.0
    out = {"policy_loss": _mean(policy, w), "kl": _mean(kl, w), "entropy": _mean(entropy, w),
           "clip_fraction": _mean(((ratio - 1.0).abs() > clip).float(), w),
           "ratio_mean": _mean(ratio, w)}
    total = out["policy_loss"] + kl_coef * out["kl"] - entropy_coef * out["entropy"]
    if values is not None:
        out["value_loss"] = ((values - returns) ** 2).mean()
        var = returns.var(unbiased=False)
        out["explained_variance"] = (1.0 - (returns - values).var(unbiased=False) / var) if var > 0 \
            else torch.zeros(())
        total = total + vf_coef * out["value_loss"]
    out["total_loss"] = total
    return out


def bound_heap(mmap_mb: int | None) -> bool:
    """Have glibc map every host allocation above `mmap_mb` MB on its own and give it back when freed.

    An update allocates and frees gigabytes of activations per decoder layer. By default glibc
    serves blocks up to 32 MB from its heaps and keeps what is freed there: measured on a
    SmolLM2 update of three 3,000-token prompts, the process held 11.9 GB at its peak against
    5.9 GB with 4 MB here, for about a third more time (docs/BENCHMARKS.md). False where the C
    library has no `mallopt` (not glibc) or `mmap_mb` is None (off); nothing changes then."""
    if not mmap_mb:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(-3, int(mmap_mb) << 20))  # -3: M_MMAP_THRESHOLD (also ends its dynamic growth)


class TokenPPOLearner(TorchLearner):
    """learner_config_dict keys: ratio_clip, kl_coef, entropy_coef, vf_coef, weight_decay, value_lr, mmap_mb (see
    DEFAULTS)."""

    def build(self) -> None:
        bound_heap(self.config.learner_config_dict.get("mmap_mb", DEFAULTS["mmap_mb"]))  # in every learner process, before the model is loaded
        super().build()

    def _opt(self, key: str) -> float:
        return float(self.config.learner_config_dict.get(key, DEFAULTS[key]))

    def configure_optimizers_for_module(self, module_id, config=None):
        module = self._module[module_id]
        head = module.unwrapped().value_head if hasattr(module, "unwrapped") else module.value_head
        head_ids = {id(p) for p in head.parameters()} if head is not None else set()
        params = [p for p in module.parameters() if p.requires_grad and id(p) not in head_ids]
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=self._opt("weight_decay"))
        self.register_optimizer(module_id=module_id, optimizer=opt, params=params, lr_or_lr_schedule=config.lr)
        if head is not None:  # the value head starts at zero and needs a larger step than the adapter
            vparams = list(head.parameters())
            vopt = torch.optim.AdamW(vparams, lr=self._opt("value_lr"))
            self.register_optimizer(module_id=module_id, optimizer_name="value", optimizer=vopt, params=vparams,
                                    lr_or_lr_schedule=self._opt("value_lr"))

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        values = fwd_out.get("value")
        out = ppo_loss(fwd_out["logp"], batch["behaviour_logp"], batch["ref_logp"], batch["advantages"],
                       batch["decision"], fwd_out["entropy"], self._opt("ratio_clip"), self._opt("kl_coef"),
                       self._opt("entropy_coef"), self._opt("vf_coef"), values,
                       batch["returns"] if values is not None else None)
        self.metrics.log_dict({(module_id, k): v.detach() for k, v in out.items()}, window=1)
        if self._step == 0:  # the first step of an update sees the behaviour policy's own weights
            self.metrics.log_dict({(module_id, f"first_{k}"): out[k].detach() for k in ("kl", "clip_fraction",
                                                                                        "ratio_mean")}, window=1)
        self._step += 1
        return out["total_loss"]

    def before_gradient_based_update(self, *, timesteps):
        super().before_gradient_based_update(timesteps=timesteps)
        self._step = 0

    # -- called by arrl.learner through LearnerGroup.foreach_learner --------------------------------
    def score(self, arrays: dict, value: bool) -> dict:
        """Reference logprobs (adapter off) and, with a value head, state values: once per batch, no grad."""
        module = self.module[next(iter(self.module.keys()))].unwrapped()
        t = {k: torch.as_tensor(v, device=self.device) for k, v in arrays.items()}
        with torch.no_grad():
            ref = module.score(t, adapter=False)["logp"]
            res = {"ref_logp": ref.cpu().numpy()}
            if value:
                res["value"] = module.score(t, adapter=True, value=True)["value"].cpu().numpy()
        return res

    def save_adapter(self, path: str) -> None:
        """The PEFT files, naming the base portably (arrl.policy.models.make_portable), not by this node's path."""
        from arrl.policy import models

        module = self.module[next(iter(self.module.keys()))].unwrapped()
        module.model.save_pretrained(path)
        if getattr(self, "_base_identity", None) is None:
            self._base_identity = models.base_identity(module.model_config["model_dir"])
        models.make_portable(path, self._base_identity)
