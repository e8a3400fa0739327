"""The policy model as an RLlib module: a causal LM with a PEFT LoRA adapter (and a value head).

`LoraPolicyModule` is a `TorchRLModule` whose network is the policy server's model (same
weights, float32 for training) wrapped by PEFT: only the LoRA matrices (and the optional
value head) are trainable; with the adapter disabled the same object is the frozen
reference policy the KL term is measured against.

A train batch (see arrl.learner.trajectory.collate) holds one row per proposal: the prompt
left-padded, the response right-padded. Proposals of one group share their prompt, which
is most of the tokens, so each distinct prompt is run once, unpadded (so SDPA can use its
memory-efficient causal kernel instead of materialising T x T attention weights), and its
key/value cache, with gradients, is repeated for the group's responses; only response
positions get logits (SmolLM2's vocabulary is 49k). With gradients on, nothing but the
inputs of each decoder layer is kept for the backward pass: the prompt runs with every
decoder layer under activation checkpointing (`_PromptCache` keeps the recomputation from
growing the key/value cache), and each group's response pass, logits included, is
recomputed in the backward pass. Memory grows with the prompt by one hidden vector per
layer per token plus its keys and values (124 KB a token measured for SmolLM2), not by
every activation of the graph
(3.6 MB a token measured before: a 4,000-token prompt took 14 GB and Ray's memory monitor
killed the learner). `forward_train` returns, per
response token, the log-probability of the sampled token and the entropy, both under the
grammar mask the server sampled with, plus the value of the state (the hidden state of the
last prompt token) when the module has a value head.

Dropout is forced to 0: RLlib runs `forward_train` in train mode, and dropout would make the
PPO ratio differ from 1 on data the policy itself just produced.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint
from ray.rllib.core.rl_module.torch import TorchRLModule
from transformers.cache_utils import DynamicCache

from arrl.learner.grammar import unpack

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def build_peft_model(model_dir: str, rank: int, alpha: float, targets: tuple[str, ...], seed: int):
    """The base model (float32, dropout 0) with a fresh LoRA adapter: A random (seeded), B zero."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(model_dir)
    for k in ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop", "dropout"):
        if hasattr(cfg, k):
            setattr(cfg, k, 0.0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, config=cfg, dtype=torch.float32)
    torch.manual_seed(seed)
    lora = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(targets), bias="none",
                      task_type="CAUSAL_LM")
    model = get_peft_model(base, lora)
    model.eval()  # no dropout anywhere; gradients still flow
    _checkpoint_layers(model)
    return model


def _checkpoint_layers(model) -> None:
    """Run every decoder layer under activation checkpointing while `model._arrl_layer_checkpoints` is set
    and gradients are on. Transformers' own gradient checkpointing drops the key/value cache, which the
    prompt pass exists to build, so the layers are wrapped here instead."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    model._arrl_layer_checkpoints = False
    for layer in model.modules():
        if isinstance(layer, GradientCheckpointingLayer):
            def forward(*args, _run=layer.forward, **kwargs):
                if model._arrl_layer_checkpoints and torch.is_grad_enabled():
                    return checkpoint(_run, *args, use_reentrant=False, **kwargs)
                return _run(*args, **kwargs)
            layer.forward = forward


class _PromptCache(DynamicCache):
    """The prompt pass's key/value cache. A checkpointed layer is run again in the backward pass with this
    same cache: the second `update` of a layer must neither append to it nor attend to the keys stored by
    the first, so it returns the recomputed keys and values as they are (the prompt's own)."""

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        if layer_idx < len(self.layers) and self.layers[layer_idx].is_initialized:
            return key_states, value_states
        return super().update(key_states, value_states, layer_idx, *args, **kwargs)


class LoraPolicyModule(TorchRLModule):
    """model_config keys: model_dir, rank, alpha, targets, value_head (bool), seed."""

    def setup(self):
        c = self.model_config
        self.model = build_peft_model(c["model_dir"], int(c.get("rank", 16)), float(c.get("alpha", 32)),
                                      tuple(c.get("targets") or DEFAULT_TARGETS), int(c.get("seed", 0)))
        self.vocab_size = self.model.config.vocab_size
        self.value_head = None
        if c.get("value_head"):
            torch.manual_seed(int(c.get("seed", 0)) + 1)
            self.value_head = torch.nn.Linear(self.model.config.hidden_size, 1)
            torch.nn.init.zeros_(self.value_head.weight)
            torch.nn.init.zeros_(self.value_head.bias)

    # RLlib calls train() before forward_train; keep every submodule in eval mode (no dropout).
    def train(self, mode: bool = True):
        return super().train(False)

    def _forward(self, batch, **kwargs):
        return self._forward_train(batch, **kwargs)

    def _forward_train(self, batch, **kwargs):
        return self.score(batch, adapter=True, value=self.value_head is not None)

    def score(self, batch, adapter: bool = True, value: bool = False) -> dict:
        """Per response token: logp of the sampled token and entropy (masked); the state value if asked.

        Rows with the same prompt (a proposal group) share one forward pass over it: the
        prompt's key/value cache is computed once per distinct prompt, with gradients, and
        indexed out to its rows for the responses.
        """
        if adapter:
            return self._score(batch, value)
        with self.model.disable_adapter():
            return self._score(batch, value)

    def _score(self, batch, value: bool) -> dict:
        keys = batch["prompt_key"]
        _, inv = torch.unique(keys, return_inverse=True)
        resp, valid, masks = batch["response_ids"], batch["valid"], batch["masks"]
        order, parts = [], []
        for u in range(int(inv.max()) + 1):
            rows = torch.nonzero(inv == u).squeeze(1)
            r0 = int(rows[0])
            plen = int(batch["prompt_mask"][r0].sum())
            prompt = batch["prompt_ids"][r0, batch["prompt_ids"].shape[1] - plen:].unsqueeze(0)
            out = self._group(prompt, resp[rows], valid[rows], masks[rows], value)
            order.append(rows)
            parts.append(out)
        back = torch.argsort(torch.cat(order))
        res = {"logp": torch.cat([p[0] for p in parts])[back], "entropy": torch.cat([p[1] for p in parts])[back]}
        if value:
            res["value"] = torch.cat([p[2] for p in parts])[back]
        return res

    def _group(self, prompt, resp, valid, masks, value: bool):
        """One prompt (no padding: SDPA may use its memory-efficient causal kernel) and its n responses."""
        seen = {}
        hook = None
        if value:  # the LM head's input at the last prompt position is the state's hidden vector
            hook = self.model.get_output_embeddings().register_forward_hook(
                lambda mod, args, out: seen.__setitem__("h", args[0]))
        cache = _PromptCache()
        self.model._arrl_layer_checkpoints = True
        try:
            pout = self.model(input_ids=prompt, past_key_values=cache, use_cache=True, logits_to_keep=1)
        finally:
            self.model._arrl_layer_checkpoints = False
            if hook is not None:
                hook.remove()
        kv = [t for layer in cache.layers for t in (layer.keys, layer.values)]
        args = (pout.logits[:, -1:], resp, valid, masks, *kv)
        if torch.is_grad_enabled():  # keep the inputs only: the responses' logits are recomputed in backward
            logp, entropy = checkpoint(self._responses, *args, use_reentrant=False)
        else:
            logp, entropy = self._responses(*args)
        n = resp.shape[0]
        v = self.value_head(seen["h"][:, -1].float()).squeeze(-1).expand(n) if value else torch.zeros(n)
        return logp, entropy, v

    def _responses(self, last, resp, valid, masks, *kv):
        """Per response token of one group: logp of the sampled token and entropy, given the prompt's last
        logits `last` and its key/value cache `kv` (keys and values of each layer in turn)."""
        n, t = resp.shape
        first = last.expand(n, 1, -1)  # predicts each response's first token
        if t > 1:
            cache = DynamicCache(ddp_cache_data=[(kv[i].repeat_interleave(n, 0), kv[i + 1].repeat_interleave(n, 0))
                                                 for i in range(0, len(kv), 2)])
            p = kv[0].shape[2]
            attn = torch.cat([torch.ones(n, p, dtype=torch.long, device=resp.device), valid[:, :t - 1].long()], 1)
            pos = (p + torch.arange(t - 1, device=resp.device)).unsqueeze(0).expand(n, -1)
            rout = self.model(input_ids=resp[:, :t - 1], attention_mask=attn, position_ids=pos, past_key_values=cache,
                              use_cache=True)
            logits = torch.cat([first, rout.logits], dim=1).float()
        else:
            logits = first.float()
        allowed = unpack(masks, logits.shape[-1])
        logits = logits.masked_fill(~allowed, float("-inf"))
        logp_all = torch.log_softmax(logits, dim=-1)
        logp = logp_all.gather(-1, resp.long().unsqueeze(-1)).squeeze(-1)
        entropy = -(logp_all.exp() * logp_all.masked_fill(~allowed, 0.0)).sum(-1)
        return logp, entropy

    # Only the trainable tensors travel (LoRA, value head): kilobytes, not the whole model.
    def trainable_names(self) -> list[str]:
        return [n for n, p in self.named_parameters() if p.requires_grad]

    def get_state(self, *args, **kwargs):
        keep = set(self.trainable_names())
        return {k: v.detach().cpu().numpy().copy() for k, v in self.state_dict().items() if k in keep}

    def set_state(self, state):
        if not state:
            return
        tensors = {k: torch.as_tensor(v) for k, v in state.items()}
        missing, unexpected = self.load_state_dict(tensors, strict=False)
        if unexpected:
            raise ValueError(f"module state has unknown tensors: {unexpected[:5]}")
