"""Loading base models and tokenizers from local directories, or by Hugging Face Hub name from the local Hub cache
(never downloaded at run time: `maporl.models.hub`)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from maporl.errors import UsageError
from maporl.models import hub

EMBEDDED = "embedded"
EMBEDDED_DIR = Path(__file__).parents[1] / "assets" / "base"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_model_dir(name_or_path: str) -> Path:
    """'embedded' -> the shipped tiny base; an existing local Hugging Face directory; or a Hub name (`org/name`)
    -> its snapshot in the local Hub cache."""
    path = EMBEDDED_DIR if name_or_path == EMBEDDED else Path(name_or_path).expanduser()
    if name_or_path != EMBEDDED and hub.is_hub_name(name_or_path):
        path = hub.resolve_name(name_or_path, "model")  # a local folder of that name wins: it is no hub name
    if not (path / "config.json").is_file():
        if name_or_path == EMBEDDED:
            raise UsageError(
                f"the embedded base is missing at {path}; rebuild it with `maporl base build --out {path}`"
            )
        raise UsageError(
            f"model directory {path} not found (no config.json); pass a local Hugging Face model directory "
            "(or a Hub name, org/name), or model.name_or_path=embedded"
        )
    return path


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    if not tokenizer.chat_template:
        raise UsageError(
            f"tokenizer in {path} has no chat template; use an instruct/chat model or add a chat_template "
            "to its tokenizer_config.json"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # common for chat models; left padding keeps prompts aligned
    return tokenizer


def load_model(path: Path, dtype: str = "float32", device: str = "cpu") -> PreTrainedModel:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype]).to(device)
    model.eval()
    return model


def load_base(name_or_path: str, dtype: str = "float32", device: str = "cpu"):
    """(model, tokenizer) of a base model directory or of the embedded default."""
    path = resolve_model_dir(name_or_path)
    return load_model(path, dtype, device), load_tokenizer(path)
