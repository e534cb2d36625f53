#!/usr/bin/env bash
# Set up (idempotent), then lint and run the whole CPU test suite. `.ci/run` calls exactly this.
# With no arguments: every test, on two workers (one torch thread each), with the line coverage of src/maporl
# (the run fails below 90%), then scripts/test_lowest.sh (the lowest supported versions). Arguments go to pytest
# instead, e.g. ./scripts/test.sh tests/test_rewards.py -x
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check --quiet .
if [ $# -gt 0 ]; then
  exec .venv/bin/python -m pytest -q "$@"
fi
.venv/bin/python -m pytest -q -n 2 --dist loadfile --cov=maporl --cov-report=term:skip-covered --cov-fail-under=90
# Then the core tests and the GPU check's CPU form with the lowest supported versions (a second venv, about a
# minute); MAPORL_SKIP_LOWEST=1 skips them.
if [ "${MAPORL_SKIP_LOWEST:-0}" != 1 ]; then
  bash scripts/test_lowest.sh
fi
