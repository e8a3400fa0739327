#!/usr/bin/env bash
# Set everything up (scripts/setup.sh), start the services the tests use (a Docker engine of
# arrl's own, scripts/dockerd.sh), and run the whole test suite on CPU. Ray clusters and
# vLLM servers are started by the tests themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if out=$(bash scripts/dockerd.sh start); then
  export "${out?}"
  echo "test: Docker engine at $DOCKER_HOST"
else
  echo "test: no Docker engine could be started; the Docker sandbox tests will say why they skip" >&2
fi
exec .venv/bin/python -m pytest "$@"
