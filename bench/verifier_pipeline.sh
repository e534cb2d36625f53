#!/usr/bin/env bash
# The learned-verifier pipeline end to end on the embedded model (CPU): roll out the untrained team on training
# problems, label, balance, train and calibrate the verifier (metrics.json: accuracy, ROC-AUC, ECE), then load-test
# the HTTP server (REQUESTS requests, default 2000, from 8 clients). Times each stage.
#
#   bash bench/verifier_pipeline.sh        # OUT=runs/verifier PROBLEMS=2000 EPOCHS=3 PRACTICE=(default) REQUESTS=2000
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/verifier}"
M="${MAPORL:-.venv/bin/maporl}"
PY="${PYTHON:-.venv/bin/python}"
if [ -e "$OUT/model" ]; then
  echo "$OUT/model exists; pass OUT=another/dir" >&2
  exit 2
fi
t0=$SECONDS
"$M" verifier gen-data --quiet --problems "${PROBLEMS:-2000}" --out "$OUT/raw.jsonl"
t1=$SECONDS
"$M" verifier balance "$OUT/raw.jsonl" --out "$OUT/balanced.jsonl"
"$M" verifier train "$OUT/balanced.jsonl" --out "$OUT/model" --epochs "${EPOCHS:-3}" --quiet \
  ${PRACTICE:+--practice "$PRACTICE"}
t2=$SECONDS
"$PY" bench/verifier_load.py --model "$OUT/model" --requests "${REQUESTS:-2000}"
t3=$SECONDS
echo "stages: gen-data $((t1 - t0)) s, balance+train $((t2 - t1)) s, load test $((t3 - t2)) s, total $((t3 - t0)) s"
