"""Synthetic target with local optima: a stand-in for training, for benchmarks of search beyond one incumbent.

It is never trained: the `simulated` sandbox backend reads the knobs below, waits for the
budget, and reports val_bpb = 1.0 + the lowest of three raised quadratic basins over the
knobs' positions in their catalog lists + Gaussian noise (arrl.worker.sandbox.simulated).
Run in a real sandbox it trains nothing and fails.
"""

DEPTH = 4
WIDTH = 128
LEARNING_RATE = 1e-3
BATCH_SIZE = 16
WARMUP = 10
DECAY = 0.0
DROPOUT = 0.0
BETA2 = 0.95

if __name__ == "__main__":
    raise SystemExit("the synthetic-basins target is only meaningful in the simulated sandbox backend")
