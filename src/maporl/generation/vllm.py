"""`generation.backend=vllm` (GPU extra, vLLM 0.33): one vLLM engine serves the base with one LoRA per agent, beside
training.

- Memory: the engine reserves `generation.vllm_gpu_memory_utilization` of the GPU (vLLM's own default, 0.92, would
  leave nothing for the update) for sequences of at most `generation.max_model_len` tokens. With
  `generation.vllm_sleep` it sleeps after each rollout (level 1: weights to CPU memory, KV cache dropped) and wakes
  before the next one, so the update has the GPU to itself. Level 2 would drop the base weights too, and this frozen
  base is never reloaded. The engine runs in its own process, so vLLM's own `empty_cache` cannot release what this
  process's allocator keeps from the update: that is done here before every wake-up.
- Tokens: prompts go in as token ids (`encode_prompt`, as for HF generation: a text prompt would get a second BOS
  from vLLM's tokenizer under Llama-style templates), and the engine's sampled ids and their log-probabilities
  (`logprobs_mode=processed_logprobs`: after temperature, the distribution sampled from) come back for training. A
  prompt that leaves no room for an answer is refused here, naming its row, before the engine would fail the whole
  call.
- Weights: `sync(team, version)` wakes the engine if it sleeps, writes each trained adapter to a fresh directory of
  that version and swaps in `LoRARequest`s with ids and names never used before: vLLM caches adapters by id and
  would keep serving the old weights under a reused one. `weights_version` changes only there, after the new
  requests are in place, and `generate` refuses to run if it was set without them (the version a transcript
  records is the version of the adapters the engine was asked to serve).

The settings vLLM would refuse or crash on (a float32 engine with LoRA, a temperature it clamps or rejects, a LoRA
rank above 512) are refused when the config is checked (config.py); `max_lora_rank` is rounded up to a rank vLLM
accepts. Rows keep their own sampling seed, as with the HF backend. vLLM is imported lazily: `import maporl` and CPU
runs never need it. `engine` may be injected (tests use a fake one that enforces vLLM 0.33's contracts).
"""

from __future__ import annotations

import gc
import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from maporl.errors import UsageError
from maporl.generation import Completion, GenRequest, encode_prompt, end_of_turn_ids, sampling_params

# vLLM accepts only these as max_lora_rank (vllm/config/lora.py:27, MaxLoRARanks); an adapter of rank r needs
# max_lora_rank >= r (vllm/lora/peft_helper.py:194).
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def max_lora_rank(rank: int) -> int:
    """The smallest rank vLLM accepts as max_lora_rank that holds an adapter of rank `rank`."""
    for allowed in LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise UsageError(f"algo.lora_rank={rank} is above vLLM's largest max_lora_rank ({LORA_RANKS[-1]}); lower it")


def engine_settings(cfg, model_dir: Path) -> dict:
    """Keyword arguments of vLLM's `LLM` for this run (each an `EngineArgs` field of vLLM 0.33)."""
    g = cfg.generation
    return {
        "model": str(Path(model_dir).resolve()),
        "enable_lora": True,
        "max_loras": max(1, cfg.discussion.num_agents),
        "max_lora_rank": max_lora_rank(cfg.algo.lora_rank),
        "dtype": cfg.model.dtype,  # float16 or bfloat16: config.py refuses float32 with this backend
        "seed": cfg.seed,
        "gpu_memory_utilization": g.vllm_gpu_memory_utilization,
        "max_model_len": g.max_model_len or None,  # None: the model's own
        "enable_sleep_mode": g.vllm_sleep,
        "logprobs_mode": "processed_logprobs",
    }


def _free_cuda_cache() -> None:
    """Hand this process's cached CUDA blocks back before the engine maps its memory again (vLLM's own empty_cache
    runs in the engine's process: vllm/device_allocator/cumem.py, CuMemAllocator.wake_up)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class VLLMGenerator:
    def __init__(self, cfg, team, engine=None, workdir: str | None = None):
        from maporl.models import resolve_model_dir

        self.cfg, self.team = cfg, team
        if len(team.models) > 1:
            raise UsageError("generation.backend=vllm serves one base model; use discussion.adapters=per_agent")
        (key,) = team.models
        self.tokenizer = team.tokenizers[key]
        self.end_ids = end_of_turn_ids(team.models[key], self.tokenizer)
        if engine is None:
            try:
                from vllm import LLM
            except ImportError:
                raise UsageError("generation.backend=vllm needs vLLM on a GPU: `pip install 'maporl[vllm]'`") from None
            engine = LLM(**engine_settings(cfg, resolve_model_dir(cfg.model.name_or_path)))
        self.engine = engine
        # The longest sequence the engine serves: what it resolved (LLM.model_config), else what was asked for, else
        # the model's own context.
        served = getattr(getattr(engine, "model_config", None), "max_model_len", None)
        own = getattr(team.models[key].config, "max_position_embeddings", None)
        self.max_model_len = served or cfg.generation.max_model_len or own
        self.asleep = False
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="maporl-vllm-")).resolve()
        self.weights_version = 0
        self.lora: dict[str, object] = {}  # adapter name -> the LoRARequest of its latest version
        self.lora_version = 0  # the weights version those requests were written under
        self.tokens_generated = 0
        if team.adapters():
            self.sync(team)

    def _lora_request(self, name: str, lora_id: int, path: Path):
        try:
            from vllm.lora.request import LoRARequest
        except ImportError:  # the fake engine in tests: any object carrying the three fields will do
            from types import SimpleNamespace

            return SimpleNamespace(lora_name=name, lora_int_id=lora_id, lora_path=str(path))
        return LoRARequest(name, lora_id, str(path))

    def sleep(self) -> None:
        """After a rollout: hand the GPU to the update (weights to CPU memory, KV cache dropped)."""
        if self.cfg.generation.vllm_sleep and not self.asleep:
            self.engine.sleep(level=1)
            self.asleep = True

    def _wake(self) -> None:
        if self.asleep:
            _free_cuda_cache()
            self.engine.wake_up()
            self.asleep = False

    def sync(self, team, version: int | None = None) -> None:
        """Wake the engine, write every agent's adapter as a PEFT directory of weights version `version` (default:
        the next one) and point the engine at it under new LoRA ids and names."""
        from safetensors.torch import save_file

        self._wake()
        version = self.weights_version + 1 if version is None else version
        root = self.workdir / f"v{version:06d}"
        model = next(iter(team.models.values()))
        states = team.adapter_states()
        lora = {}
        for k, ((_, name), state) in enumerate(states.items()):
            out = root / name
            out.mkdir(parents=True, exist_ok=True)
            save_file(state, out / "adapter_model.safetensors")
            config = model.peft_config[name].to_dict()
            config = {key: sorted(v) if isinstance(v, set) else v for key, v in config.items()}
            (out / "adapter_config.json").write_text(json.dumps(config, indent=2, default=str))
            # An id vLLM has never seen loads the new weights (a reused one serves the cached old ones); a name of
            # its own per version too, since vLLM 0.33 tells requests apart by name alone.
            lora[name] = self._lora_request(f"{name}@v{version}", version * len(states) + k + 1, out)
        self.lora, self.lora_version, self.weights_version = lora, version, version
        # The previous version stays while requests may still name it; older ones go.
        for old in self.workdir.glob("v*"):
            if old.name < f"v{version - 1:06d}":
                shutil.rmtree(old, ignore_errors=True)

    def _check_lengths(self, prompts: list[list[int]], requests: Sequence[GenRequest]) -> None:
        """vLLM refuses a prompt of max_model_len tokens or more (one position is kept for the answer:
        vllm/v1/engine/input_processor.py, _validate_prompt_len) and then fails every row of the call."""
        if not self.max_model_len:
            return
        for row, (ids, r) in enumerate(zip(prompts, requests, strict=True)):
            if len(ids) >= self.max_model_len:
                raise UsageError(
                    f"generation: row {row} (agent {r.agent}) has a prompt of {len(ids)} tokens, at or over the "
                    f"engine's max_model_len of {self.max_model_len} (vLLM keeps one position for the answer); raise "
                    "generation.max_model_len (prompt + generation.max_new_tokens) or shorten the task's questions"
                )

    def generate(self, requests: Sequence[GenRequest]) -> list[Completion]:
        if self.lora and self.lora_version != self.weights_version:
            raise RuntimeError(
                f"maporl: the vLLM engine holds adapters of weights version {self.lora_version}, but the generator "
                f"is at version {self.weights_version}: new weights must go through sync(team, version)"
            )
        self._wake()
        g = self.cfg.generation
        prompts = [encode_prompt(self.tokenizer, r.messages) for r in requests]
        self._check_lengths(prompts, requests)
        params = [sampling_params(g.temperature, g.max_new_tokens, r.seed, self.end_ids) for r in requests]
        loras = [self.lora.get(self.team.slots[r.agent].adapter or "") for r in requests]
        outputs = self.engine.generate(
            [{"prompt_token_ids": p} for p in prompts], params, lora_request=loras, use_tqdm=False
        )
        completions = []
        for o in outputs:
            out = o.outputs[0]
            ids = tuple(out.token_ids)  # the stop token included: vLLM appends it before checking for a stop
            logprobs = tuple(step[t].logprob for step, t in zip(out.logprobs, ids, strict=True))
            completions.append(Completion(out.text, out.finish_reason == "length", ids, logprobs))
            self.tokens_generated += len(ids)
        return completions
