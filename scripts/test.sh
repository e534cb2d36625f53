#!/usr/bin/env bash
# Set up (idempotent), lint, then test. `.ci/run` calls it with no arguments.
#
#   ./scripts/test.sh               everything, as CI runs it: every test, the slow ones too, on two workers (one torch
#                                   thread each) with the line coverage of src/maporl (the run fails below 90%), then
#                                   scripts/test_lowest.sh (the lowest supported versions; MAPORL_SKIP_LOWEST=1 skips it)
#   ./scripts/test.sh --fast [ARGS] the unit tier for the inner loop: every test not marked slow, on two workers, no
#                                   coverage (under a minute and a half here); ARGS go to pytest too
#   ./scripts/test.sh ARGS          pytest ARGS instead, e.g. ./scripts/test.sh tests/test_rewards.py -x
#
# The slowest tests run first (tests/conftest.py) and idle workers take tests from busy ones (--dist worksteal), so
# the two workers finish together. Each phase's seconds are printed at its end.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
phase() { echo "test.sh: $1 took $((SECONDS - start)) s" >&2; start=$SECONDS; }
# A full run also tests the lowest versions: set-up installs their environment beside its own last step.
if [ $# -eq 0 ] && [ "${MAPORL_SKIP_LOWEST:-0}" != 1 ]; then
  MAPORL_SETUP_LOWEST=1 bash scripts/setup.sh
else
  bash scripts/setup.sh
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check --quiet .
phase "set-up and lint"
# set-up compiled what the tests import (scripts/precompile.py); what it missed is cached by the first process that
# imports it, not compiled again in every worker, subprocess and Ray actor (where PYTHONDONTWRITEBYTECODE is set).
unset PYTHONDONTWRITEBYTECODE
if [ "${1:-}" = --fast ]; then
  shift
  exec .venv/bin/python -m pytest -q -m "not slow" -n 2 --dist worksteal "$@"
fi
if [ $# -gt 0 ]; then
  exec .venv/bin/python -m pytest -q "$@"
fi
.venv/bin/python -m pytest -q -n 2 --dist worksteal --durations=15 \
  --cov=maporl --cov-report=term:skip-covered --cov-fail-under=90
phase "the suite"
if [ "${MAPORL_SKIP_LOWEST:-0}" != 1 ]; then
  bash scripts/test_lowest.sh
  phase "the lowest versions"
fi
