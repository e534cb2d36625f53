"""Byte-compile what maporl and its tests import, by importing it (scripts/setup.sh runs this after pip install
--no-compile): far fewer files than pip's compile-everything step, and every Python process then starts faster."""

import importlib
import os
import warnings

warnings.filterwarnings("ignore")
os.environ["TRANSFORMERS_VERBOSITY"] = "error"
MODULES = [
    "maporl.cli",
    "maporl.trainer",
    "maporl.study.reproduce",
    "maporl.study.report",
    "maporl.models.gguf",
    "maporl.tracking",
    "maporl.distributed.actors",
    "maporl.verifiers.train",
    "maporl.verifiers.api",
    "maporl.tasks.hub",
    "matplotlib.pyplot",
    "torch.utils.tensorboard",
    "tensorboard.backend.event_processing.event_accumulator",
    "wandb",
    "ray",
    "fastapi",
    "uvicorn",
    "datasets",
    "reasoning_gym",
    "gguf",
    "pytest",
    "xdist",
    "pytest_cov",
    "hypothesis",
]
for name in MODULES:
    importlib.import_module(name)

from transformers.utils import logging as hf_logging  # noqa: E402

from maporl.config import load_config  # noqa: E402
from maporl.team import build_team  # noqa: E402

hf_logging.disable_progress_bar()
# transformers and peft import a model's classes when it is built: build the shipped team once.
build_team(load_config(None, []), with_adapters=True)
