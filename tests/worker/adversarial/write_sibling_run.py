"""Writing into another run: the test creates a sibling run directory (ledger, experiments, git) and another
experiment's scratch folder next to this run's. Overwrite their files, drop a STOP request, forge this run's own
host-side eval.json, delete trees, by host path and by climbing out of the work dir. Nothing may change."""

import shutil

SIBLING = "{{SIBLING_RUN}}"
OTHER_WORK = "{{OTHER_WORK}}"
RUN_DIR = "{{RUN_DIR}}"


def attempt(what, fn):
    try:
        got = fn()
    except Exception as e:  # noqa: BLE001 - a failure is the sandbox working
        print(f"BLOCKED {what}: {type(e).__name__}: {e}", flush=True)
        return None
    print(f"ESCAPED {what}: {got!r}"[:300], flush=True)
    return got


def write(path, data=b"HACKED\n", mode="wb"):
    with open(path, mode) as f:
        f.write(data)
    return f"wrote {path}"


attempt("create STOP in the sibling run", lambda: write(f"{SIBLING}/STOP"))
attempt("overwrite a sibling outcome", lambda: write(f"{SIBLING}/experiments/000001/outcome.json",
                                                     b'{"status": "ok", "val_bpb": 0.0001}'))
attempt("append to the sibling's config", lambda: write(f"{SIBLING}/config.json", b" ", "ab"))
attempt("overwrite the other experiment's model", lambda: write(f"{OTHER_WORK}/model.pt2"))
attempt("append to the other experiment's progress", lambda: write(
    f"{OTHER_WORK}/progress.jsonl", b'{"event": "step", "elapsed": 1, "step": 1, "train_loss": 0.0}\n', "ab"))
attempt("forge this run's eval.json on the host", lambda: write(f"{RUN_DIR}/eval.json",
                                                                 b'{"status": "ok", "val_bpb": 0.0001}\n'))
attempt("forge eval.json one level above the work dir", lambda: write("../eval.json",
                                                                      b'{"status": "ok", "val_bpb": 0.0001}\n'))
for rel in ("../../other/work/model.pt2", "../../../runs/other/STOP", "/proc/self/cwd/../../other/work/x"):
    attempt(f"write {rel}", lambda rel=rel: write(rel))
attempt("delete the sibling run", lambda: shutil.rmtree(SIBLING) or "deleted")
attempt("delete the other experiment", lambda: shutil.rmtree(OTHER_WORK) or "deleted")
print("done: sibling writes tried", flush=True)
