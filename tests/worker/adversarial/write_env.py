"""Writing into the frozen environment: append to, create, rename, chmod and delete the env code (at its sandbox
path /arrl/env and at its host path) and the prepared data (manifest, token table, a training shard, a new file in
the validation split). Every write must be refused and the env and data must be byte-identical afterwards."""

import glob
import os

import env

ENV_SANDBOX = os.path.dirname(env.__file__)
ENV_HOST = "{{ENV_DIR}}"
DATA_SANDBOX = os.environ["ARRL_DATA_DIR"]
DATA_HOST = "{{DATA_DIR}}"


def attempt(what, fn):
    try:
        got = fn()
    except Exception as e:  # noqa: BLE001 - a failure is the sandbox working
        print(f"BLOCKED {what}: {type(e).__name__}: {e}", flush=True)
        return None
    print(f"ESCAPED {what}: {got!r}"[:300], flush=True)
    return got


def append(path, data=b"\nHACKED = True\n"):
    with open(path, "ab") as f:
        f.write(data)
    return f"appended to {path}"


def create(path):
    with open(path, "xb") as f:
        f.write(b"HACKED = True\n")
    return f"created {path}"


shards = sorted(glob.glob(os.path.join(DATA_SANDBOX, "train", "*.parquet")))
for base in (ENV_SANDBOX, ENV_HOST):
    attempt(f"append {base}/evaluate.py", lambda base=base: append(os.path.join(base, "evaluate.py")))
    attempt(f"append {base}/model_io.py", lambda base=base: append(os.path.join(base, "model_io.py")))
    attempt(f"create {base}/sitecustomize.py", lambda base=base: create(os.path.join(base, "sitecustomize.py")))
    attempt(f"truncate {base}/progress.py", lambda base=base: os.truncate(os.path.join(base, "progress.py"), 0))
attempt("rename evaluate.py", lambda: os.rename(os.path.join(ENV_SANDBOX, "evaluate.py"),
                                                os.path.join(ENV_SANDBOX, "evaluate_orig.py")))
attempt("chmod evaluate.py", lambda: os.chmod(os.path.join(ENV_SANDBOX, "evaluate.py"), 0o777))
attempt("unlink model_io.py", lambda: os.unlink(os.path.join(ENV_SANDBOX, "model_io.py")))
attempt("mkdir env/__pycache__", lambda: os.mkdir(os.path.join(ENV_SANDBOX, "__pycache__", "x")))
for base in (DATA_SANDBOX, DATA_HOST):
    attempt(f"append {base}/manifest.json", lambda base=base: append(os.path.join(base, "manifest.json"), b" "))
    attempt(f"create {base}/val/shard_99999.parquet",
            lambda base=base: create(os.path.join(base, "val", "shard_99999.parquet")))
attempt("overwrite token_bytes.npy", lambda: open(os.path.join(DATA_SANDBOX, "token_bytes.npy"), "r+b").write(b"\0"))
attempt("append to a training shard", lambda: append(shards[0], b"PAR1"))
attempt("unlink a training shard", lambda: os.unlink(shards[0]))
attempt("create a file in the data dir", lambda: create(os.path.join(DATA_SANDBOX, "extra.json")))
print("done: env and data writes tried", flush=True)
