#!/usr/bin/env bash
# Set up (idempotent), then run the main job on the embedded default: watch the untrained team discuss one
# question, then measure it on held-out problems (accuracy per agent x turn, majority vote, transitions).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/maporl discuss "What is 17+25-9?" --answer 33
.venv/bin/maporl eval --problems "${PROBLEMS:-200}" "$@"
