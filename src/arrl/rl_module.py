"""The policy model as an RLlib module: a causal LM with a PEFT LoRA adapter (and a value head).

`LoraPolicyModule` is a `TorchRLModule` whose network is the policy server's model (same
weights, float32 for training) wrapped by PEFT: only the LoRA matrices (and the optional
value head) are trainable; with the adapter disabled the same object is the frozen
reference policy the KL term is measured against.

A train batch (see arrl.trajectory.collate) holds one row per proposal: the prompt
left-padded, the response right-padded. Proposals of one group share their prompt, which
is most of the tokens, so each distinct prompt is run once (its key/value cache, with
gradients, is indexed out to its rows) and only response positions get logits (SmolLM2's
vocabulary is 49k; logits over whole prompts would not fit). `forward_train` returns, per
response token, the log-probability of the sampled token and the entropy, both under the
grammar mask the server sampled with, plus the value of the state (the hidden state of the
last prompt token) when the module has a value head.

Dropout is forced to 0: RLlib runs `forward_train` in train mode, and dropout would make the
PPO ratio differ from 1 on data the policy itself just produced.
"""

from __future__ import annotations

import torch
from ray.rllib.core.rl_module.torch import TorchRLModule

from arrl.grammar import unpack

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
    return model


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
        rows = torch.arange(len(keys), device=keys.device)
        first = torch.full((int(inv.max()) + 1,), len(keys), device=keys.device, dtype=torch.long)
        first = first.scatter_reduce(0, inv, rows, reduce="amin")  # one representative row per prompt
        pids, pmask = batch["prompt_ids"][first], batch["prompt_mask"][first]
        ppos = (pmask.cumsum(-1) - 1).clamp(min=0)
        seen = {}
        hook = None
        if value:  # the LM head's input at the last prompt position is the state's hidden vector
            hook = self.model.get_output_embeddings().register_forward_hook(
                lambda mod, args, out: seen.__setitem__("h", args[0]))
        try:
            pout = self.model(input_ids=pids, attention_mask=pmask, position_ids=ppos, use_cache=True,
                              logits_to_keep=1)
        finally:
            if hook is not None:
                hook.remove()
        resp = batch["response_ids"]
        t = resp.shape[1]
        first_logits = pout.logits[:, -1][inv].unsqueeze(1)  # predicts each row's first response token
        if t > 1:
            cache = pout.past_key_values
            cache.batch_select_indices(inv)
            rmask = batch["valid"][:, :t - 1].to(pmask.dtype)
            attn = torch.cat([pmask[inv], rmask], dim=1)
            rpos = ppos[inv][:, -1:] + 1 + torch.arange(t - 1, device=resp.device)
            rout = self.model(input_ids=resp[:, :t - 1], attention_mask=attn, position_ids=rpos,
                              past_key_values=cache, use_cache=True)
            logits = torch.cat([first_logits, rout.logits], dim=1).float()
        else:
            logits = first_logits.float()
        allowed = unpack(batch["masks"], logits.shape[-1])
        logits = logits.masked_fill(~allowed, float("-inf"))
        logp_all = torch.log_softmax(logits, dim=-1)
        logp = logp_all.gather(-1, resp.long().unsqueeze(-1)).squeeze(-1)
        p = logp_all.exp()
        entropy = -(p * logp_all.masked_fill(~allowed, 0.0)).sum(-1)
        res = {"logp": logp, "entropy": entropy}
        if value:
            res["value"] = self.value_head(seen["h"][:, -1].float()).squeeze(-1)[inv]
        return res

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
