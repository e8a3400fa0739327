#!/usr/bin/env bash
# Set up everything arrl needs on a fresh Linux machine with Python 3.11:
# a virtual environment in .venv with the CPU build of torch and arrl (editable, with the
# dev extra), plus bubblewrap for the process sandbox. Idempotent; safe to re-run.
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

# torch: the CPU build 2.13.0. Where pip already finds that wheel locally (a wheel cache or
# find-links), use it; otherwise add PyTorch's CPU index (asking an unreachable index costs
# a network time-out per attempt, so it is added only when needed).
if ! .venv/bin/python -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
  if "${PIP[@]}" install --dry-run --no-deps --no-index -q torch==2.13.0 >/dev/null 2>&1; then
    "${PIP[@]}" install -q torch==2.13.0
  else
    "${PIP[@]}" install -q torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu
  fi
fi

"${PIP[@]}" install -q -e ".[dev]"

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
