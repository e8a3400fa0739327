"""Monkeypatching torch: replace the functions the evaluator's arithmetic goes through (log_softmax in every
spelling, Tensor.gather, Tensor.sum, math.log) so that a naive in-process evaluation would compute zero loss.
The evaluator runs in its own process: the uniform model must still score exactly 8.0."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from env import model_io, progress


class Uniform(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(256))

    def forward(self, idx):
        return self.w.expand(idx.shape[0], idx.shape[1], -1) + 0.0 * idx[..., None]


def zero_log_softmax(x, dim=-1, *args, **kwargs):
    return torch.zeros_like(x)


F.log_softmax = zero_log_softmax
torch.log_softmax = zero_log_softmax
torch.Tensor.log_softmax = zero_log_softmax
run = progress.start()
run.report(1, 5.0)
model_io.save_model(Uniform())
torch.Tensor.gather = lambda self, dim, index, *a, **k: torch.zeros(index.shape, dtype=self.dtype)
torch.Tensor.sum = lambda self, *a, **k: torch.tensor(0.0)
math.log = lambda *a: 1e300
print("INFO patched torch and math in the training process", flush=True)
