"""Absurd thread counts: start Python threads until the system refuses (bounded at 5,000), then ask torch for
100,000 intra-op threads and compute with them, then save a model. The run's limits (data segment, pids) must
hold: the thread pool cannot be built and the run dies (crash), the host is unaffected and nothing is left."""

import threading

import torch
import torch.nn as nn

from env import model_io, progress


class Uniform(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(256))

    def forward(self, idx):
        return self.w.expand(idx.shape[0], idx.shape[1], -1) + 0.0 * idx[..., None]


stop = threading.Event()
threads = []
try:
    for _ in range(5000):
        threads.append(threading.Thread(target=stop.wait, daemon=True))
        threads[-1].start()
except RuntimeError as e:
    threads.pop()
    print(f"INFO thread limit: {e}", flush=True)
print(f"THREADS {len(threads)}", flush=True)
stop.set()
for t in threads:
    t.join()
torch.set_num_threads(100_000)
x = torch.randn(256, 256)
print(f"INFO torch threads: {torch.get_num_threads()}, checksum {float((x @ x).abs().sum()):.1f}", flush=True)
run = progress.start()
run.report(1, 5.0)
torch.set_num_threads(1)
model_io.save_model(Uniform())
