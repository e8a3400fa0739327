"""Reading host secrets: an environment variable the test sets in its own process (ARRL_TEST_SECRET), through
os.environ and every /proc/<pid>/environ, and a canary file the test puts in the real $HOME, by its host path and
by name in the sandbox's $HOME and /root; plus the usual credential files. None may be visible."""

import os

NAME = "ARRL_TEST_SECRET"
CANARY = "{{HOME_CANARY}}"
CANARY_NAME = "{{CANARY_NAME}}"


def attempt(what, fn):
    try:
        got = fn()
    except Exception as e:  # noqa: BLE001 - a failure is the sandbox working
        print(f"BLOCKED {what}: {type(e).__name__}: {e}", flush=True)
        return None
    print(f"ESCAPED {what}: {got!r}"[:300], flush=True)
    return got


def read(path, n=4096):
    with open(path, "rb") as f:
        return f.read(n)


def environs():
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            found += [v for v in read(f"/proc/{pid}/environ", 1 << 20).split(b"\0") if v.startswith(NAME.encode())]
        except OSError:
            pass
    if not found:
        raise KeyError(f"{NAME} in no visible process")
    return found


attempt("secret in os.environ", lambda: os.environ[NAME])
attempt("secret in any /proc/<pid>/environ", environs)
attempt("home canary by host path", lambda: read(CANARY))
attempt("home canary in $HOME", lambda: read(os.path.join(os.path.expanduser("~"), CANARY_NAME)))
attempt("home canary in /root", lambda: read(os.path.join("/root", CANARY_NAME)))
for path in ("/root/.ssh/id_rsa", "/root/.ssh/id_ed25519", "/root/.aws/credentials", "/root/.docker/config.json",
             "/root/.netrc", "/root/.git-credentials", "/etc/shadow"):
    attempt(f"read {path}", lambda path=path: read(path, 64))
print("done: secrets searched", flush=True)
