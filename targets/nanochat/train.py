"""Single-GPU GPT pretraining on the web profile (BPE, vocab 8192), 5-minute budget.

Modern, portable choices: rotary position embeddings, RMS-normalised queries and keys
(QK-norm), ReLU² MLP, untied embedding and head, logit soft-capping, bf16 autocast,
torch SDPA attention (no kernels tied to one GPU family), Muon (orthogonalised momentum,
via a Newton-Schulz iteration) for the matrices and AdamW for embeddings and the head.
On a machine without a GPU it runs on the CPU (slowly); the tests shrink the dimensions
below to a smoke configuration.
"""

import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from env import loader, model_io, progress, runtime

# ---- hyperparameters -------------------------------------------------------------
DEPTH = 12  # transformer blocks
MODEL_DIM = 768  # residual stream width
HEAD_DIM = 128  # attention head width (heads = MODEL_DIM // HEAD_DIM)
MLP_RATIO = 4  # MLP hidden width / MODEL_DIM
DEVICE_BATCH = 32  # sequences per forward pass
GRAD_ACCUM = 1  # forward passes per optimizer step
MATRIX_LR = 0.02  # Muon learning rate for 2-D weights of the blocks
EMBED_LR = 0.3  # AdamW learning rate of the token embedding
HEAD_LR = 0.004  # AdamW learning rate of the output head
MUON_MOMENTUM = 0.95
NS_STEPS = 5  # Newton-Schulz iterations in Muon
WARMUP_FRAC = 0.0  # fraction of the budget spent warming up the learning rates
COOLDOWN_FRAC = 0.4  # fraction of the budget spent decaying them linearly to zero
LOGIT_CAP = 15.0  # soft cap on the output logits
ROPE_BASE = 10000.0
COMPILE = True  # torch.compile the model (GPU only)
# ----------------------------------------------------------------------------------


def rms_norm(x):
    return F.rms_norm(x, (x.size(-1),))


def rotary(x, cos, sin):
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class Attention(nn.Module):
    def __init__(self, dim, head_dim):
        super().__init__()
        self.n_head, self.head_dim = dim // head_dim, head_dim
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x, cos, sin):
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_head, self.head_dim).unbind(2)
        q, k = rms_norm(q), rms_norm(k)  # QK-norm keeps attention logits bounded
        q, k = rotary(q, cos, sin), rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    def __init__(self, dim, head_dim):
        super().__init__()
        self.attn = Attention(dim, head_dim)
        self.fc = nn.Linear(dim, MLP_RATIO * dim, bias=False)
        self.out = nn.Linear(MLP_RATIO * dim, dim, bias=False)

    def forward(self, x, cos, sin):
        x = x + self.attn(rms_norm(x), cos, sin)
        return x + self.out(F.relu(self.fc(rms_norm(x))).square())


class GPT(nn.Module):
    def __init__(self, vocab, seq_len):
        super().__init__()
        self.embed = nn.Embedding(vocab, MODEL_DIM)
        self.blocks = nn.ModuleList(Block(MODEL_DIM, HEAD_DIM) for _ in range(DEPTH))
        self.head = nn.Linear(MODEL_DIM, vocab, bias=False)
        inv = 1.0 / ROPE_BASE ** (torch.arange(0, HEAD_DIM, 2, dtype=torch.float32) / HEAD_DIM)
        angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv)
        self.register_buffer("cos", angles.cos()[None, :, None, :], persistent=False)
        self.register_buffer("sin", angles.sin()[None, :, None, :], persistent=False)
        nn.init.normal_(self.embed.weight, std=1.0)
        nn.init.zeros_(self.head.weight)
        for block in self.blocks:
            for lin in (block.attn.qkv, block.fc):
                nn.init.uniform_(lin.weight, -(3 ** 0.5) / MODEL_DIM ** 0.5, (3 ** 0.5) / MODEL_DIM ** 0.5)
            nn.init.zeros_(block.attn.proj.weight)  # each block starts as the identity
            nn.init.zeros_(block.out.weight)

    def forward(self, idx):
        t = idx.shape[1]
        cos, sin = self.cos[:, :t].to(self.embed.weight.dtype), self.sin[:, :t].to(self.embed.weight.dtype)
        x = rms_norm(self.embed(idx))
        for block in self.blocks:
            x = block(x, cos, sin)
        logits = self.head(rms_norm(x)).float()
        return LOGIT_CAP * torch.tanh(logits / LOGIT_CAP)


def newton_schulz(g, steps):
    """Approximately orthogonalise g (the polar factor) with a quintic iteration in bf16."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.bfloat16()
    transposed = x.size(0) > x.size(1)
    if transposed:
        x = x.T
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return (x.T if transposed else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """Momentum SGD whose update for each matrix is replaced by its orthogonalised form."""

    def __init__(self, params, lr, momentum, ns_steps):
        super().__init__(params, dict(lr=lr, momentum=momentum, ns_steps=ns_steps))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum", torch.zeros_like(p))
                buf.lerp_(p.grad, 1 - group["momentum"])
                update = p.grad.lerp(buf, group["momentum"])  # Nesterov
                update = newton_schulz(update, group["ns_steps"])
                scale = max(1.0, p.size(0) / p.size(1)) ** 0.5
                p.add_(update, alpha=-group["lr"] * scale)


def lr_factor(frac):
    if frac < WARMUP_FRAC:
        return (frac + 1e-3) / WARMUP_FRAC
    if frac > 1 - COOLDOWN_FRAC:
        return max(0.0, (1 - frac) / COOLDOWN_FRAC)
    return 1.0


def main():
    torch.set_num_threads(runtime.threads())
    torch.manual_seed(runtime.seed())
    prof = runtime.profile()
    device = runtime.device()
    cuda = device.startswith("cuda")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    model = GPT(prof.vocab_size, prof.seq_len).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    matrices = [p for p in model.blocks.parameters() if p.dim() == 2]
    adam = torch.optim.AdamW([dict(params=[model.embed.weight], lr=EMBED_LR),
                              dict(params=[model.head.weight], lr=HEAD_LR)],
                             betas=(0.8, 0.95), eps=1e-10, weight_decay=0.0, fused=cuda)
    muon = Muon(matrices, lr=MATRIX_LR, momentum=MUON_MOMENTUM, ns_steps=NS_STEPS)
    optimizers = [adam, muon]
    for opt in optimizers:
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    step_model = torch.compile(model) if COMPILE and cuda else model
    autocast = torch.autocast(device_type="cuda" if cuda else "cpu", dtype=torch.bfloat16)
    data = loader.batches(DEVICE_BATCH, prof.seq_len, device)
    tokens_per_step = DEVICE_BATCH * GRAD_ACCUM * prof.seq_len
    print(f"params: {n_params:,}  tokens/step: {tokens_per_step:,}  device: {device}", flush=True)

    run = progress.start()
    step, t_first = 0, None
    while not run.over_budget():
        frac = run.elapsed() / run.budget_s
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * lr_factor(frac)
        for _ in range(GRAD_ACCUM):
            x, y = next(data)
            with autocast:
                loss = F.cross_entropy(step_model(x).view(-1, prof.vocab_size), y.reshape(-1))
            (loss / GRAD_ACCUM).backward()
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)
        step += 1
        if step == 1:
            t_first = time.monotonic()  # excludes compilation from the throughput figure
        if step % 10 == 0:
            run.report(step, loss.item())
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.monotonic() - t_first if t_first and step > 1 else float("nan")
    tok_s = (step - 1) * tokens_per_step / elapsed if step > 1 else float("nan")
    flops_per_token = 6 * n_params + 12 * DEPTH * MODEL_DIM * prof.seq_len
    peak_mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    run.finish(steps=step, tokens_per_s=tok_s, flops_per_token=flops_per_token, peak_mem_gib=peak_mem)
    print(f"steps: {step}\ntokens_per_s: {tok_s:.0f}\nflops_per_token: {flops_per_token}\n"
          f"peak_mem_gib: {peak_mem:.2f}", flush=True)
    model_io.save_model(model)


if __name__ == "__main__":
    main()
