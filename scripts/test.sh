#!/usr/bin/env bash
# Set everything up (scripts/setup.sh), start the services the tests use (a Docker engine of
# arrl's own, scripts/dockerd.sh), and run the test suite on CPU. Ray clusters and vLLM
# servers are started by the tests themselves.
#   bash scripts/test.sh [PYTEST ARGS]          the CI tier: every test, the long trials at their
#                                               CI strength (tests/tiers.py)
#   bash scripts/test.sh --full [PYTEST ARGS]   the full tier: every chaos trial, every seed
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
exec .venv/bin/python -m pytest "$@"
