"""Poisoned progress records: lines the host's JSON reader chokes on (nesting deeper than the recursion limit, an
Infinity step, an integer timestamp too large for a float, steps no ledger column holds), a 2 MB line, binary junk,
between valid records. The host must skip the bad lines, keep the good ones and finish the run (invalid_metric: no
model)."""

from env import progress, runtime

run = progress.start()
run.report(1, 4.0)
with open(runtime.progress_path(), "ab") as f:
    f.write(b"[" * 200_000 + b"\n")
    f.write(b'{"event": "step", "elapsed": 1, "step": Infinity, "train_loss": 1.0}\n')
    f.write(b'{"event": "step", "elapsed": 1e999, "step": 1e400, "train_loss": 1.0}\n')
    f.write(b'{"event": "launch", "time": 1' + b"0" * 400 + b"}\n")
    f.write(b'{"event": "step", "elapsed": 1' + b"0" * 400 + b', "step": 3, "train_loss": 1.0}\n')
    f.write(b'{"event": {"nested": [1, 2]}, "time": [1]}\n')
    f.write(b'{"event": "step", "elapsed": 1, "step": ' + b"9" * 5000 + b', "train_loss": null}\n')
    f.write(b"\x00\xff\xfe" * 1000 + b"\n")
    f.write(b"9" * (2 << 20) + b"\n")
    f.write(b'{"event": "step", "elapsed": 2, "step": 1e300, "train_loss": 1.0}\n')  # finite, but no step count
    f.write(b'{"event": "step", "elapsed": 2, "step": ' + b"7" * 30 + b', "train_loss": 1.0}\n')  # beyond int64
    f.write(b'{"event": "step", "elapsed": 2, "step": -4, "train_loss": 1.0}\n')
run.report(2, 3.5)
print("INFO poisoned the progress file", flush=True)
