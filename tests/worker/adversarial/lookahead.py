"""A look-ahead (non-causal) model: it predicts token t from token t+1 of the same window, which would score far
below any honest model. The evaluator's causality probe must refuse it (invalid_metric)."""

import torch
import torch.nn as nn

from env import model_io, progress


class Peek(nn.Module):
    def __init__(self, vocab=256):
        super().__init__()
        self.emb = nn.Parameter(torch.randn(vocab, vocab))

    def forward(self, idx):
        return self.emb[torch.roll(idx, -1, dims=1)]


run = progress.start()
run.report(1, 5.0)
model_io.save_model(Peek())
