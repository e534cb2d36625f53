#!/usr/bin/env bash
# The core tests and the CPU form of the GPU check (bench/gpu_check.py --device cpu --tiny) against the lowest
# versions maporl supports (constraints/lowest.txt), in a second environment, .venv-lowest (idempotent, like
# setup.sh). scripts/test.sh runs it after the suite. Arguments go to pytest instead of the default file list, e.g.
# ./scripts/test_lowest.sh tests/test_vllm.py
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
venv=.venv-lowest
if [ ! -x "$venv/bin/python" ]; then
  echo "test_lowest: creating $venv with $($PY --version 2>&1)" >&2
  "$PY" -m venv "$venv"
fi
stamp="$venv/.maporl-installed"
want="$(cat pyproject.toml constraints/lowest.txt scripts/test_lowest.sh | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "test_lowest: installing maporl with constraints/lowest.txt" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-compile -c constraints/lowest.txt \
    -e . "pytest>=8" "pytest-xdist>=3.8" "hypothesis>=6"
  echo "$want" > "$stamp"
fi
"$venv/bin/python" - <<'PY'
import importlib.metadata as m
print("test_lowest:", ", ".join(f"{p} {m.version(p)}" for p in ("torch", "transformers", "peft", "accelerate", "tokenizers")))
PY
if [ $# -eq 0 ]; then
  # What a GPU user's transformers and peft touch: generation, LoRA batches, token fidelity, the memory options,
  # training and resume, discussion, evaluation, heterogeneous teams, the pinned run and the vLLM backend's contract.
  set -- -n 2 --dist loadfile tests/test_generation.py tests/test_lora_batch.py tests/test_token_fidelity.py \
    tests/test_update_options.py tests/test_training.py tests/test_vllm.py tests/test_discussion.py \
    tests/test_evaluation.py tests/test_heterogeneous.py tests/test_pinned_run.py tests/test_losses.py \
    tests/test_advantages.py tests/test_rewards.py
fi
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
# The GPU check's CPU form: what an air-gapped GPU machine with these versions runs first.
"$venv/bin/python" bench/gpu_check.py --device cpu --tiny --log runs/gpu_check_lowest/gpu_check.log
