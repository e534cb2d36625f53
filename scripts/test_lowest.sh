#!/usr/bin/env bash
# The tests of what transformers, peft and tokenizers do for maporl, and the CPU form of the GPU check
# (bench/gpu_check.py --smoke), against the lowest versions maporl supports (constraints/lowest.txt), in a second
# environment, .venv-lowest (idempotent, like setup.sh). scripts/test.sh runs it after the suite. Arguments go to
# pytest instead of the default file list, e.g. ./scripts/test_lowest.sh tests/test_vllm.py; --setup-only installs and
# stops (scripts/setup.sh runs that beside its own last step).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
phase() { echo "test_lowest: $1 took $((SECONDS - start)) s" >&2; start=$SECONDS; }
PY="${PYTHON:-python3}"
venv=.venv-lowest
if [ ! -x "$venv/bin/python" ]; then
  echo "test_lowest: creating $venv with $($PY --version 2>&1)" >&2
  "$PY" -m venv "$venv"
fi
stamp="$venv/.maporl-installed"
linkable="$(ls -d .venv/lib/python*/site-packages/torch-*.dist-info 2>/dev/null || true)"  # torch linked below
want="$( (cat pyproject.toml constraints/lowest.txt scripts/test_lowest.sh; echo "$linkable") | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "test_lowest: installing maporl with constraints/lowest.txt" >&2
  quiet=(--quiet --disable-pip-version-check)
  "$venv/bin/python" -m pip install "${quiet[@]}" "pip==26.2.1"  # as in setup.sh: choosing the files takes half as long
  # torch: constraints/lowest.txt pins the build .venv already has (the CPU wheels of older releases are not on
  # PyPI), so its files are linked from there instead of unpacked again (700 MB, with their bytecode). Links from a
  # run before go first, so that pip never removes a different torch through them.
  site() { "$1/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))'; }
  lowest_site="$(site "$venv")"
  find "$lowest_site" -maxdepth 1 -type l -delete
  pin="$(sed -n 's/^torch==//p' constraints/lowest.txt)"
  have="$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true)"
  if [ -n "$pin" ] && [ "${have%%+*}" = "$pin" ]; then
    main_site="$(site .venv)"
    for entry in torch torchgen functorch "torch-$have.dist-info"; do
      if [ -e "$main_site/$entry" ]; then
        ln -sr "$main_site/$entry" "$lowest_site/$entry"
      fi
    done
  fi
  "$venv/bin/python" -m pip install "${quiet[@]}" --no-compile -c constraints/lowest.txt \
    -e . "pytest>=8" "pytest-xdist>=3.8" "hypothesis>=6"
  echo "$want" > "$stamp"
fi
"$venv/bin/python" - <<'PY'
import importlib.metadata as m
print("test_lowest:", ", ".join(f"{p} {m.version(p)}" for p in ("torch", "transformers", "peft", "accelerate", "tokenizers")))
PY
phase "set-up"
if [ "${1:-}" = --setup-only ]; then
  exit 0
fi
# pip installed without byte-compiling (as setup.sh): the first process to import a module caches its bytecode for
# the others (where PYTHONDONTWRITEBYTECODE is set, every process would compile transformers again, seconds each).
unset PYTHONDONTWRITEBYTECODE
if [ $# -eq 0 ]; then
  # What a GPU user's transformers, peft and tokenizers touch: generation and mixed-adapter batches, LoRA internals,
  # token fidelity, the memory options, training and resume (safetensors, numpy state), heterogeneous teams, the
  # pinned run and the vLLM backend's contract. (The losses, advantages, rewards, discussion and evaluation tests
  # use torch alone, the same build in both environments.)
  set -- -n 2 --dist worksteal tests/test_generation.py tests/test_lora_batch.py tests/test_token_fidelity.py \
    tests/test_update_options.py tests/test_training.py tests/test_vllm.py tests/test_heterogeneous.py \
    tests/test_pinned_run.py
fi
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
phase "the tests"
# The GPU check's CPU form: what an air-gapped GPU machine with these versions runs first.
"$venv/bin/python" bench/gpu_check.py --smoke --log runs/gpu_check_lowest/gpu_check.log
phase "the GPU check's CPU form"
