"""Writing into the git branch: a sibling run's repository (arrl/<run>) gets hooks and a core.fsmonitor command
(git would run them on the host at the next commit or status), a moved branch ref and a rewritten train.py; also
`git commit` through the git binary. The repository must be unchanged."""

import os
import subprocess

GIT = "{{SIBLING_GIT}}"


def attempt(what, fn):
    try:
        got = fn()
    except Exception as e:  # noqa: BLE001 - a failure is the sandbox working
        print(f"BLOCKED {what}: {type(e).__name__}: {e}", flush=True)
        return None
    print(f"ESCAPED {what}: {got!r}"[:300], flush=True)
    return got


def write(path, data, mode="wb"):
    with open(path, mode) as f:
        f.write(data)
    if "hooks" in path:
        os.chmod(path, 0o755)
    return f"wrote {path}"


def git(*args):
    r = subprocess.run(["git", "-C", GIT, *args], capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip()[:200] or f"git exited {r.returncode}")
    return r.stdout[:100]


hook = b"#!/bin/sh\ntouch /tmp/arrl-git-hook-ran\n"
attempt("install a post-commit hook", lambda: write(f"{GIT}/.git/hooks/post-commit", hook))
attempt("install a pre-commit hook", lambda: write(f"{GIT}/.git/hooks/pre-commit", hook))
attempt("set core.fsmonitor", lambda: write(f"{GIT}/.git/config", b"[core]\n\tfsmonitor = touch /tmp/x\n", "ab"))
attempt("move the branch ref", lambda: write(f"{GIT}/.git/refs/heads/arrl/other", b"0" * 40 + b"\n"))
attempt("rewrite train.py", lambda: write(f"{GIT}/train.py", b"print('forged')\n"))
attempt("git commit in the sibling repo", lambda: git("commit", "--allow-empty", "-m", "forged"))
attempt("git log of the sibling repo", lambda: git("log", "--oneline"))
print("done: git writes tried", flush=True)
