"""Aliasing the environment from the writable work dir: hard-link env code and data files into /arrl/work (a link
would share the inode, so a write through it would change the original), symlink them and write through the
symlink, rename them into the work dir. All must fail; the env and data must be unchanged."""

import glob
import os

ENV = "/arrl/env"
DATA = os.environ["ARRL_DATA_DIR"]
WORK = os.environ["ARRL_WORK_DIR"]


def attempt(what, fn):
    try:
        got = fn()
    except Exception as e:  # noqa: BLE001 - a failure is the sandbox working
        print(f"BLOCKED {what}: {type(e).__name__}: {e}", flush=True)
        return None
    print(f"ESCAPED {what}: {got!r}"[:300], flush=True)
    return got


def link_and_write(src, dst, make):
    make(src, dst)
    with open(dst, "ab") as f:
        f.write(b"\n# HACKED through a link\n")
    return f"{dst} -> {src} written"


sources = [f"{ENV}/evaluate.py", f"{ENV}/model_io.py", f"{DATA}/manifest.json", f"{DATA}/token_bytes.npy",
           *sorted(glob.glob(f"{DATA}/train/*.parquet"))[:1]]
for i, src in enumerate(sources):
    attempt(f"hard link {src}", lambda src=src, i=i: link_and_write(src, f"{WORK}/hard-{i}", os.link))
    attempt(f"write through symlink to {src}", lambda src=src, i=i: link_and_write(src, f"{WORK}/soft-{i}",
                                                                                      os.symlink))
    attempt(f"rename {src} into work", lambda src=src, i=i: os.rename(src, f"{WORK}/moved-{i}"))
print("done: links tried", flush=True)
