"""A custom operator in the saved graph: the model's forward calls an operator registered by the script itself
(torch.library), whose implementation peeks at the next token and exists only in the training process. The
evaluator must refuse the graph (unknown operator, outside the ATen allow-list), never run script code."""

import torch
import torch.nn as nn
from torch.library import custom_op

from env import model_io, progress


@custom_op("arrl_adv::peek", mutates_args=())
def peek(idx: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    return emb[torch.roll(idx, -1, dims=1)]


@peek.register_fake
def _(idx, emb):
    return emb.new_empty((*idx.shape, emb.shape[1]))


class Peek(nn.Module):
    def __init__(self, vocab=256):
        super().__init__()
        self.emb = nn.Parameter(torch.randn(vocab, vocab))

    def forward(self, idx):
        return peek(idx, self.emb)


run = progress.start()
run.report(1, 5.0)
model_io.save_model(Peek())
