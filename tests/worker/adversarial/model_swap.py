"""Changing the model after training: save a valid model, leave behind a detached process that waits until the
script has exited and then, while the evaluator would be loading, overwrites model.pt2 with garbage again and
again. The run's processes must all be dead before evaluation starts: ok at exactly 8.0."""

import os
import time

import torch
import torch.nn as nn

from env import model_io, progress, runtime


class Uniform(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(256))

    def forward(self, idx):
        return self.w.expand(idx.shape[0], idx.shape[1], -1) + 0.0 * idx[..., None]


run = progress.start()
run.report(1, 5.0)
model = model_io.save_model(Uniform())
exiting = runtime.work_dir() / "exiting"
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        while not exiting.exists():
            time.sleep(0.01)
        time.sleep(0.5)
        for i in range(1000):
            model.write_bytes(b"not a model any more")
            with open(runtime.work_dir() / "swapped.txt", "a") as f:
                f.write(f"{i}\n")
            time.sleep(0.02)
        os._exit(0)
    os._exit(0)
print("INFO exiting", flush=True)
exiting.touch()
os._exit(0)  # at once: the detached process's half-second head start begins now
