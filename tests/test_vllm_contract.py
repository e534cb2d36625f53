"""The project's real vLLM arguments built with vLLM's own pure-Python objects, where vLLM can be imported (it needs
no GPU for these): SamplingParams, LoRARequest, LoRAConfig, EngineArgs, TokensPrompt; and the fake engine's rules
(fake_vllm.py) checked against vLLM's own definitions. Skipped where vLLM is not installed (the CPU suite)."""

from __future__ import annotations

import dataclasses
import inspect
import typing

import pytest
from conftest import tiny_cfg

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'maporl[vllm]')")

import fake_vllm  # noqa: E402

from maporl.generation import sampling_params  # noqa: E402
from maporl.generation.vllm import LORA_RANKS, VLLMGenerator, engine_settings, max_lora_rank  # noqa: E402

VLLM = ("generation.backend=vllm", "model.dtype=bfloat16")


def test_the_fakes_rules_are_vllms_own():
    from vllm.config.lora import MaxLoRARanks
    from vllm.config.model import LogprobsMode, ModelDType
    from vllm.engine.arg_utils import EngineArgs

    assert typing.get_args(MaxLoRARanks) == LORA_RANKS == fake_vllm.MAX_LORA_RANKS
    assert typing.get_args(LogprobsMode) == fake_vllm.LOGPROBS_MODES
    assert typing.get_args(ModelDType) == fake_vllm.MODEL_DTYPES
    assert fake_vllm.ENGINE_ARGS <= {f.name for f in dataclasses.fields(EngineArgs)}


def test_engine_settings_build_vllms_engine_args_and_lora_config(tiny_model_dir):
    from vllm.config.lora import LoRAConfig
    from vllm.engine.arg_utils import EngineArgs

    for rank in (1, 2, 8, 12, 64, 300, 512):
        settings = engine_settings(tiny_cfg(tiny_model_dir, *VLLM, f"algo.lora_rank={rank}"), tiny_model_dir)
        EngineArgs(**settings)  # every keyword is a field
        lora = LoRAConfig(max_lora_rank=settings["max_lora_rank"], max_loras=settings["max_loras"])
        assert lora.max_lora_rank == max_lora_rank(rank) >= rank


def test_sampling_params_and_lora_requests_are_vllms(tiny_model_dir, tmp_path):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest

    params = sampling_params(0.7, 64, 2**62, [2, 3])
    assert isinstance(params, SamplingParams)
    assert (params.temperature, params.max_tokens, params.seed, params.stop_token_ids, params.logprobs) == (
        0.7,
        64,
        2**62,
        [2, 3],
        0,
    )
    cfg = tiny_cfg(tiny_model_dir, *VLLM)
    request = VLLMGenerator._lora_request(None, "agent0@v3", 7, tmp_path.resolve())
    assert isinstance(request, LoRARequest) and (request.lora_name, request.lora_int_id) == ("agent0@v3", 7)
    assert TokensPrompt(prompt_token_ids=[1, 2, 3]) == {"prompt_token_ids": [1, 2, 3]}
    assert cfg.generation.backend == "vllm"


def test_what_the_generator_reads_of_an_output_exists():
    from vllm.outputs import CompletionOutput

    assert {"text", "token_ids", "logprobs", "finish_reason"} <= {f.name for f in dataclasses.fields(CompletionOutput)}


def test_generate_takes_the_lora_requests_by_keyword():
    try:
        from vllm import LLM
    except ImportError as e:  # the engine's own imports (xgrammar, fastapi, ...) beyond the pure-Python objects
        pytest.skip(f"vllm.LLM does not import here: {e}")
    signature = inspect.signature(LLM.generate)
    assert signature.parameters["lora_request"].kind is inspect.Parameter.KEYWORD_ONLY
    assert signature.parameters["use_tqdm"].kind is inspect.Parameter.KEYWORD_ONLY
