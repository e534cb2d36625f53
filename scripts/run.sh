#!/usr/bin/env bash
# Set up (idempotent), then the main job on the embedded default: `maporl train` co-trains 3 agents x 3 turns of
# the shipped tiny model on CPU (configs/tiny.yaml: 312 steps, about 15 minutes on 2 cores; docs/training.md), then evaluates the team.
# Extra arguments go to `maporl train`, e.g. ./scripts/run.sh --minutes 5 --out runs/quick
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# A new run directory each time, so running this twice never collides with (or overwrites) an earlier run.
case " $* " in
  *" --out "*|*" --resume "*) exec .venv/bin/maporl train "$@" ;;
  *) exec .venv/bin/maporl train --out "runs/tiny-$(date +%Y%m%d-%H%M%S)" "$@" ;;
esac
