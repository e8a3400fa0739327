"""A look-ahead across the batch: causal within each window, but every window also reads the first token of the
next window of the batch (its continuation in the validation stream). The causality probe's cross-window check
must refuse it (invalid_metric)."""

import torch
import torch.nn as nn

from env import model_io, progress


class PeekNextWindow(nn.Module):
    def __init__(self, vocab=256):
        super().__init__()
        self.emb = nn.Parameter(torch.randn(vocab, vocab))

    def forward(self, idx):
        return self.emb[idx] + self.emb[torch.roll(idx, -1, dims=0)][:, :1, :]


run = progress.start()
run.report(1, 5.0)
model_io.save_model(PeekNextWindow())
