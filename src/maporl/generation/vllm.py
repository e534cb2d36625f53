"""`generation.backend=vllm` (GPU extra): one vLLM engine serves the base with one LoRA per agent, beside training.

- Memory: the engine reserves `generation.vllm_gpu_memory_utilization` of the GPU (vLLM's own default, 0.9, would
  leave nothing for the update) for sequences of at most `generation.max_model_len` tokens. With
  `generation.vllm_sleep` it sleeps after each rollout (level 1: weights to CPU memory, KV cache dropped) and wakes
  before the next one, so the update has the GPU to itself. Level 2 (weights dropped) crashes with LoRA enabled.
- Tokens: prompts go in as token ids (`encode_prompt`, as for HF generation: a text prompt would get a second BOS
  from vLLM's tokenizer under Llama-style templates), and the engine's sampled ids and their log-probabilities
  (`logprobs_mode=processed_logprobs`: after temperature, the distribution sampled from) come back for training.
- Weights: after every update `sync(team)` wakes the engine if it sleeps, writes each trained adapter to a fresh
  versioned directory and swaps in a new `LoRARequest` (a new id makes vLLM load the new weights; after waking that
  reloads them too).

Rows keep their own sampling seed, as with the HF backend. vLLM is imported lazily: `import maporl` and CPU runs never
need it. `engine` may be injected (tests use a fake one on CPU).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from maporl.errors import UsageError
from maporl.generation import Completion, GenRequest, encode_prompt, end_of_turn_ids, sampling_params


def engine_settings(cfg, model_dir: Path) -> dict:
    """Keyword arguments of vLLM's `LLM` for this run."""
    g = cfg.generation
    return {
        "model": str(model_dir),
        "enable_lora": True,
        "max_loras": max(1, cfg.discussion.num_agents),
        "max_lora_rank": cfg.algo.lora_rank,
        "dtype": cfg.model.dtype,
        "seed": cfg.seed,
        "gpu_memory_utilization": g.vllm_gpu_memory_utilization,
        "max_model_len": g.max_model_len or None,  # None: the model's own
        "enable_sleep_mode": g.vllm_sleep,
        "logprobs_mode": "processed_logprobs",
    }


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
        self.asleep = False
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="maporl-vllm-"))
        self.weights_version = 0
        self.lora: dict[str, object] = {}  # adapter name -> current LoRARequest
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
            self.engine.wake_up()
            self.asleep = False

    def sync(self, team) -> None:
        """Wake the engine, write every agent's adapter as a PEFT directory under a new version and point the engine
        at it."""
        from safetensors.torch import save_file

        self._wake()
        self.weights_version += 1
        root = self.workdir / f"v{self.weights_version:06d}"
        model = next(iter(team.models.values()))
        for k, ((_, name), state) in enumerate(team.adapter_states().items()):
            out = root / name
            out.mkdir(parents=True, exist_ok=True)
            save_file(state, out / "adapter_model.safetensors")
            config = model.peft_config[name].to_dict()
            config = {key: sorted(v) if isinstance(v, set) else v for key, v in config.items()}
            (out / "adapter_config.json").write_text(json.dumps(config, indent=2, default=str))
            # Unique ids per version: vLLM caches adapters by id, a new id loads the new weights.
            self.lora[name] = self._lora_request(name, self.weights_version * 1000 + k + 1, out)
        old = self.workdir / f"v{self.weights_version - 2:06d}"
        shutil.rmtree(old, ignore_errors=True)  # keep the previous version while requests may still use it

    def generate(self, requests: Sequence[GenRequest]) -> list[Completion]:
        self._wake()
        g = self.cfg.generation
        prompts = [{"prompt_token_ids": encode_prompt(self.tokenizer, r.messages)} for r in requests]
        params = [sampling_params(g.temperature, g.max_new_tokens, r.seed, self.end_ids) for r in requests]
        loras = [self.lora.get(self.team.slots[r.agent].adapter or "") for r in requests]
        outputs = self.engine.generate(prompts, params, lora_request=loras, use_tqdm=False)
        completions = []
        for o in outputs:
            out = o.outputs[0]
            ids = tuple(out.token_ids)  # the stop token included: vLLM appends it before checking for a stop
            logprobs = tuple(step[t].logprob for step, t in zip(out.logprobs, ids, strict=True))
            completions.append(Completion(out.text, out.finish_reason == "length", ids, logprobs))
            self.tokens_generated += len(ids)
        return completions
