"""A CPU stand-in for vLLM 0.33's offline `LLM` that enforces the contracts maporl relies on, each rule taken from
vLLM's source (paths relative to the vllm-0.33.0 wheel). It fails where the real engine fails, so a setting or call
that would break on a GPU breaks a test here.

Every answer is 3 tokens taken from the end of its prompt, then `stop_token_ids[0]`, at log-probabilities
−0.5 − 0.1·k; `calls` records generate / sleep / wake_up, `served` the adapter each row was served with (its name,
id, path and the tensors loaded for that id).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

# vllm/engine/arg_utils.py (EngineArgs, a plain dataclass): the fields maporl passes, and others a caller may add.
ENGINE_ARGS = {
    "model",
    "enable_lora",
    "max_loras",
    "max_lora_rank",
    "max_cpu_loras",
    "lora_dtype",
    "dtype",
    "seed",
    "gpu_memory_utilization",
    "max_model_len",
    "enable_sleep_mode",
    "logprobs_mode",
    "tokenizer",
    "skip_tokenizer_init",
    "tensor_parallel_size",
    "enforce_eager",
    "max_num_seqs",
    "enable_prefix_caching",
    "kv_cache_memory_bytes",
    "disable_log_stats",
    "trust_remote_code",
}
MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm/config/lora.py:27
MODEL_DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")  # vllm/config/model.py:100
LOGPROBS_MODES = ("raw_logits", "raw_logprobs", "processed_logits", "processed_logprobs")  # config/model.py:101-103


class VLLMValidationError(Exception):
    """vllm/exceptions.py:28-56 (not a ValueError)."""


class FakeLLM:
    instances: list[FakeLLM] = []

    def __init__(self, model: str, **kwargs):
        unknown = sorted(set(kwargs) - ENGINE_ARGS)
        if unknown:  # vllm/entrypoints/llm.py:295-336 passes them on to the EngineArgs dataclass
            raise TypeError(f"EngineArgs.__init__() got an unexpected keyword argument '{unknown[0]}'")
        self.settings = {"model": model, **kwargs}
        enable_lora = kwargs.get("enable_lora", False)
        rank, max_loras = kwargs.get("max_lora_rank", 16), kwargs.get("max_loras", 1)
        dtype = kwargs.get("dtype", "auto")
        if rank not in MAX_LORA_RANKS:  # vllm/config/lora.py:27,34 (pydantic literal_error)
            raise ValueError(f"max_lora_rank: Input should be 1, 8, 16, 32, 64, 128, 256, 320 or 512, got {rank}")
        if max_loras < 1:  # vllm/config/lora.py:36
            raise ValueError("max_loras: Input should be greater than or equal to 1")
        if dtype not in MODEL_DTYPES:  # vllm/config/model.py:100
            raise ValueError(f"dtype: Input should be one of {MODEL_DTYPES}, got {dtype!r}")
        utilization = kwargs.get("gpu_memory_utilization", 0.92)  # vllm/config/cache.py:215
        if not 0 < utilization <= 1:
            raise ValueError("gpu_memory_utilization: Input should be greater than 0 and at most 1")
        if kwargs.get("logprobs_mode", "raw_logprobs") not in LOGPROBS_MODES:  # vllm/config/model.py:101-103
            raise ValueError(f"logprobs_mode: Input should be one of {LOGPROBS_MODES}")
        # vllm/config/model.py:2642-2683: None is the model's own length; more than that is refused.
        config = json.loads((Path(model) / "config.json").read_text())
        derived = config.get("max_position_embeddings", 2048)
        max_model_len = kwargs.get("max_model_len")
        if max_model_len is not None and max_model_len > derived:
            raise ValueError(
                f"User-specified max_model_len ({max_model_len}) is greater than the derived max_model_len"
            )
        self.model_config = SimpleNamespace(max_model_len=max_model_len or derived)  # LLM.model_config, llm.py:344
        # Start-up profiles the model with max_loras dummy adapters (vllm/v1/worker/gpu/model_runner.py:911-918),
        # and the LoRA shrink kernel asserts 16-bit inputs (vllm/lora/ops/triton_ops/lora_shrink_op.py:281).
        if enable_lora and dtype in ("float", "float32"):
            raise RuntimeError(
                "Engine core initialization failed. See root cause above. (AssertionError in lora_shrink)"
            )
        self.enable_lora, self.max_lora_rank, self.sleep_mode = enable_lora, rank, kwargs.get("enable_sleep_mode")
        self.calls: list[str] = []
        self.requests: list[tuple] = []
        self.served: list[SimpleNamespace | None] = []  # per row of the last generate call
        self.adapters: dict[int, SimpleNamespace] = {}  # lora_int_id -> what was loaded for it (worker_manager.py)
        self.asleep = False
        FakeLLM.instances.append(self)

    def _adapter(self, request) -> SimpleNamespace:
        """vllm/lora/worker_manager.py:288-324: adapters are cached by lora_int_id; an id seen before serves what was
        loaded then, whatever its path says now (unless load_inplace)."""
        if request.lora_int_id < 1:  # vllm/lora/request.py:37-42
            raise ValueError(f"id must be > 0, got {request.lora_int_id}")
        if not request.lora_path or not Path(request.lora_path).is_absolute():  # request.py:37-42, lora/utils.py:342
            raise ValueError(f"lora_path must be an absolute local path, got {request.lora_path!r} (else a hub id)")
        if request.lora_int_id not in self.adapters or getattr(request, "load_inplace", False):
            from safetensors.torch import load_file

            config = json.loads((Path(request.lora_path) / "adapter_config.json").read_text())
            if config["r"] > self.max_lora_rank:  # vllm/lora/peft_helper.py:188-202
                raise ValueError(f"LoRA rank {config['r']} is greater than max_lora_rank {self.max_lora_rank}.")
            tensors = load_file(Path(request.lora_path) / "adapter_model.safetensors")
            self.adapters[request.lora_int_id] = SimpleNamespace(path=request.lora_path, tensors=tensors)
        loaded = self.adapters[request.lora_int_id]
        return SimpleNamespace(
            name=request.lora_name, id=request.lora_int_id, path=loaded.path, tensors=loaded.tensors
        )

    @staticmethod
    def _check_params(p) -> float:
        """vllm/sampling_params.py:559-745; returns the temperature the engine samples at."""
        if not (0 <= p.temperature <= 2 and math.isfinite(p.temperature)):  # :667-672
            raise VLLMValidationError(f"temperature must be in [0, 2], got {p.temperature}.")
        if p.max_tokens < 1:  # :691-696
            raise VLLMValidationError(f"max_tokens must be at least 1, got {p.max_tokens}.")
        if p.logprobs is not None and p.logprobs < -1:  # :711-716
            raise VLLMValidationError(f"logprobs must be non-negative or -1, got {p.logprobs}.")
        return 0.01 if 0 < p.temperature < 0.01 else p.temperature  # :560-568: raised to 0.01 with a warning

    def generate(self, prompts, sampling_params=None, *, use_tqdm=True, lora_request=None, priority=None):
        if self.asleep:  # vllm/v1/core/sched/scheduler.py:1062-1068: queued, never scheduled: the real call hangs
            raise RuntimeError("generate() on a sleeping engine: vLLM would hang here (call wake_up first)")
        n = len(prompts)
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * n
        loras = lora_request if isinstance(lora_request, list) else [lora_request] * n
        if len(params) != n or len(loras) != n:  # vllm/entrypoints/common/offline.py:253-283
            raise VLLMValidationError(f"The lengths of prompts ({n}) and params/lora_request must be the same.")
        limit = self.model_config.max_model_len
        # vllm/v1/engine/input_processor.py:557-602; one bad row fails the whole call (offline.py:539-566)
        for prompt in prompts:
            if len(prompt["prompt_token_ids"]) >= limit:
                raise VLLMValidationError(
                    f"The decoder prompt (length {len(prompt['prompt_token_ids'])}) plus the number of requested "
                    f"output tokens (at least 1) is longer than the maximum model length of {limit}."
                )
        if any(r is not None for r in loras) and not self.enable_lora:  # input_processor.py:278-286
            raise VLLMValidationError("Got lora_request but LoRA is not enabled!")
        self.calls.append("generate")
        self.requests.append((prompts, params, loras))
        self.served = [None if r is None else self._adapter(r) for r in loras]
        outputs = []
        for prompt, p in zip(prompts, params, strict=True):
            self._check_params(p)
            ids = [*prompt["prompt_token_ids"][-3:], p.stop_token_ids[0]][: p.max_tokens]
            logprobs = [{t: SimpleNamespace(logprob=-0.5 - 0.1 * k)} for k, t in enumerate(ids)]
            finish = "stop" if ids[-1] in p.stop_token_ids else "length"
            out = SimpleNamespace(text=f"answer {ids[0]}", token_ids=ids, logprobs=logprobs, finish_reason=finish)
            outputs.append(SimpleNamespace(outputs=[out]))
        return outputs

    def sleep(self, level: int = 1, mode: str = "abort"):
        """vllm/entrypoints/llm.py:839-862. Without enable_sleep_mode nothing was allocated to be freed."""
        if level not in (0, 1, 2):
            raise ValueError(f"sleep level must be 0, 1 or 2, got {level}")
        if not self.sleep_mode:
            raise RuntimeError("sleep() needs LLM(enable_sleep_mode=True)")
        self.calls.append(f"sleep({level})")
        self.asleep = True

    def wake_up(self, tags=None) -> bool:
        """vllm/entrypoints/llm.py:872-888; waking an awake engine only logs a warning (executor/abstract.py:412)."""
        self.calls.append("wake_up" if self.asleep else "wake_up(awake)")
        self.asleep = False
        return True
