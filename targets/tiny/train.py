"""Tiny byte-level GPT on the Shakespeare profile: trains on 2 CPU cores in tens of seconds.

This is the file arrl's policy edits. The environment (data, budget, evaluation) is
frozen; everything below the imports is fair game, as long as the script trains until
the budget runs out and then calls `model_io.save_model(model)`.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from env import loader, model_io, progress, runtime

# ---- hyperparameters -------------------------------------------------------------
N_LAYER = 4  # transformer blocks
N_HEAD = 4  # attention heads per block
N_EMBD = 128  # residual stream width
MLP_RATIO = 4  # hidden width of the MLP / N_EMBD
BATCH_SIZE = 16  # windows per step
LEARNING_RATE = 3e-3  # peak AdamW learning rate
WARMUP_STEPS = 20  # linear warm-up
FINAL_LR_FRAC = 0.1  # the learning rate decays (cosine, over the time budget) to this fraction
WEIGHT_DECAY = 0.1
BETA2 = 0.99
GRAD_CLIP = 1.0
# ----------------------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, MLP_RATIO * d, bias=False)
        self.out = nn.Linear(MLP_RATIO * d, d, bias=False)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, vocab: int, seq_len: int):
        super().__init__()
        self.tok = nn.Embedding(vocab, N_EMBD)
        self.pos = nn.Embedding(seq_len, N_EMBD)
        self.blocks = nn.ModuleList(Block(N_EMBD, N_HEAD) for _ in range(N_LAYER))
        self.ln_f = nn.LayerNorm(N_EMBD)
        self.head = nn.Linear(N_EMBD, vocab, bias=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * N_LAYER) if name.endswith(("proj.weight", "out.weight")) else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def lr_at(step: int, frac_done: float) -> float:
    if step < WARMUP_STEPS:
        return LEARNING_RATE * (step + 1) / WARMUP_STEPS
    cos = 0.5 * (1 + math.cos(math.pi * min(frac_done, 1.0)))
    return LEARNING_RATE * (FINAL_LR_FRAC + (1 - FINAL_LR_FRAC) * cos)


def main():
    torch.set_num_threads(runtime.threads())
    torch.manual_seed(runtime.seed())
    prof = runtime.profile()
    device = runtime.device()
    model = GPT(prof.vocab_size, prof.seq_len).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": other, "weight_decay": 0.0}],
                            lr=LEARNING_RATE, betas=(0.9, BETA2))
    data = loader.batches(BATCH_SIZE, prof.seq_len, device)
    print(f"params: {sum(p.numel() for p in model.parameters()):,}", flush=True)

    run = progress.start()
    step = 0
    while not run.over_budget():
        x, y = next(data)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, run.elapsed() / run.budget_s)
        loss = F.cross_entropy(model(x).view(-1, prof.vocab_size), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        step += 1
        run.report(step, loss.item())  # every step: self-evaluation extrapolates this curve
    run.finish(steps=step)
    print(f"steps: {step}", flush=True)
    model_io.save_model(model)


if __name__ == "__main__":
    main()
