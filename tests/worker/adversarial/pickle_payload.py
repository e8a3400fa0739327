"""A model file whose loading would run code: a valid exported model whose pickled entries (weights, sample
inputs, constants) are replaced by a pickle that calls exec. If the evaluator ever unpickled it, the payload
would write marker files (on a host path, in the work dir, in /tmp), say so on stderr and print a forged result.
The loader is weights-only: the payload must not run, the run must not be ok, no marker may exist."""

import os
import pickle
import zipfile

import torch
import torch.nn as nn

from env import model_io, progress, runtime

MARKER = "{{MARKER}}"
PAYLOAD = f'''
import os, sys
for p in ({MARKER!r}, "/arrl/work/PAYLOAD_RAN", "/tmp/PAYLOAD_RAN", os.path.expanduser("~/PAYLOAD_RAN")):
    try:
        open(p, "w").write("ran")
    except OSError:
        pass
sys.stderr.write("PAYLOAD RAN\\n")
print('{{"status": "ok", "val_bpb": 0.0001}}', flush=True)
'''


class Payload:
    def __reduce__(self):
        return (exec, (PAYLOAD,))


class Uniform(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(256))

    def forward(self, idx):
        return self.w.expand(idx.shape[0], idx.shape[1], -1) + 0.0 * idx[..., None]


run = progress.start()
run.report(1, 5.0)
clean = model_io.save_model(Uniform(), runtime.work_dir() / "clean.pt2")
evil = runtime.model_path()
replaced = []
with zipfile.ZipFile(clean) as src, zipfile.ZipFile(evil, "w") as dst:
    for item in src.infolist():
        data = src.read(item)
        name = item.filename
        if name.endswith((".pt", ".pkl")) or (("/data/weights/" in name or "/data/constants/" in name)
                                                and not name.endswith(".json")):
            data = pickle.dumps(Payload())
            replaced.append(name)
        dst.writestr(item, data)
os.unlink(clean)
print(f"INFO payload in {replaced}", flush=True)
