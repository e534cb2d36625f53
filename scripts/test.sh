#!/usr/bin/env bash
# Set up (idempotent), then lint and run the whole CPU test suite. `.ci/run` calls exactly this.
# With no arguments: every test, on two workers (one torch thread each), with the line coverage of src/maporl
# (the run fails below 90%). Arguments go to pytest instead, e.g. ./scripts/test.sh tests/test_rewards.py -x
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check --quiet .
if [ $# -eq 0 ]; then
  set -- -n 2 --dist loadfile --cov=maporl --cov-report=term:skip-covered --cov-fail-under=90
fi
exec .venv/bin/python -m pytest -q "$@"
