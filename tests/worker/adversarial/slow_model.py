"""Evaluation-time denial of service: a valid, causal model whose forward pass is twenty large matrix products,
so that evaluating it would take minutes of the host's CPU. The evaluator must be stopped at its own timeout
(invalid_metric) and must not outlive the run."""

import torch
import torch.nn as nn

from env import model_io, progress


class Slow(nn.Module):
    def __init__(self, vocab=256, width=2048, depth=20):
        super().__init__()
        self.emb = nn.Parameter(torch.randn(vocab, width) * 0.02)
        self.w = nn.Parameter(torch.randn(width, width) / width**0.5)
        self.head = nn.Parameter(torch.randn(width, vocab) * 0.02)
        self.depth = depth

    def forward(self, idx):
        h = self.emb[idx]
        for _ in range(self.depth):
            h = torch.tanh(h @ self.w)
        return h @ self.head


run = progress.start()
run.report(1, 5.0)
model_io.save_model(Slow())
