#!/usr/bin/env bash
# Set everything up (scripts/setup.sh), start the services the tests use (a Docker engine of
# arrl's own, scripts/dockerd.sh), and run the test suite on CPU. Ray clusters and vLLM
# servers are started by the tests themselves.
#   bash scripts/test.sh                the CI tier: every test, the long trials at their CI strength
#                                       (tests/tiers.py); the adversarial corpus runs first, in 2 processes
#   bash scripts/test.sh --full         the full tier: every chaos trial, every seed
#   bash scripts/test.sh [--full] ARGS  one pytest with these arguments (a file, -k ...), after the same setup
set -euo pipefail
cd "$(dirname "$0")/.."
export ARRL_TEST_TIER=ci
if [ "${1:-}" = "--full" ]; then
  ARRL_TEST_TIER=full
  shift
fi
echo "test: tier $ARRL_TEST_TIER"
bash scripts/setup.sh
if out=$(bash scripts/dockerd.sh start); then
  export "${out?}"
  echo "test: Docker engine at $DOCKER_HOST"
else
  echo "test: no Docker engine could be started; the Docker sandbox tests will say why they skip" >&2
fi
if [ $# -gt 0 ]; then  # a chosen part of the suite: one pytest, as given
  exec .venv/bin/python -m pytest "$@"
fi
# The whole suite in two steps. 1. The adversarial corpus in two processes, one sandbox kind each (each case is
# one core's work: a sandboxed interpreter importing torch); the Docker half builds its image while the process
# half runs. env/ is compiled first, so neither process writes bytecode into the env dir that the other's cases
# check for changes. 2. Everything else in one process: the timing checks of the loop (steps, foreign CPU
# share, contention) assume nothing else runs.
.venv/bin/python -m compileall -q env
rc=0
.venv/bin/python -m pytest -n 2 --dist loadgroup tests/worker/test_adversarial.py || rc=$?
.venv/bin/python -m pytest --ignore=tests/worker/test_adversarial.py || rc=$?
echo "test: $([ $rc = 0 ] && echo passed || echo "FAILED (exit $rc)"): the adversarial corpus, then the rest"
exit $rc
