"""`generation.backend=vllm` (GPU extra): one vLLM engine serves the base with one LoRA per agent.

After every update `sync(team)` writes each trained adapter to a fresh versioned directory and swaps in a new
`LoRARequest` (a new id makes vLLM load the new weights). Rows keep their own sampling seed, as with the HF backend,
so a discussion is reproducible on the same engine. vLLM is imported lazily: `import maporl` and CPU runs never
need it. `engine` may be injected (tests use a fake one on CPU).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from maporl.errors import UsageError
from maporl.generation import Completion, GenRequest, sampling_params


class VLLMGenerator:
    def __init__(self, cfg, team, engine=None, workdir: str | None = None):
        from maporl.models import resolve_model_dir

        self.cfg, self.team = cfg, team
        self.tokenizer = next(iter(team.tokenizers.values()))
        if len(team.models) > 1:
            raise UsageError("generation.backend=vllm serves one base model; use discussion.adapters=per_agent")
        if engine is None:
            try:
                from vllm import LLM
            except ImportError:
                raise UsageError("generation.backend=vllm needs vLLM on a GPU: `pip install 'maporl[vllm]'`") from None
            engine = LLM(
                model=str(resolve_model_dir(cfg.model.name_or_path)),
                enable_lora=True,
                max_loras=max(1, cfg.discussion.num_agents),
                max_lora_rank=cfg.algo.lora_rank,
                dtype=cfg.model.dtype,
                seed=cfg.seed,
            )
        self.engine = engine
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="maporl-vllm-"))
        self.version = 0
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

    def sync(self, team) -> None:
        """Write every agent's adapter as a PEFT directory under a new version and point the engine at it."""
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        self.version += 1
        root = self.workdir / f"v{self.version:06d}"
        model = next(iter(team.models.values()))
        for k, (_, name) in enumerate(team.adapters()):
            out = root / name
            out.mkdir(parents=True, exist_ok=True)
            state = get_peft_model_state_dict(model, adapter_name=name)
            save_file(
                {key: v.detach().contiguous().cpu() for key, v in state.items()}, out / "adapter_model.safetensors"
            )
            config = model.peft_config[name].to_dict()
            config = {key: sorted(v) if isinstance(v, set) else v for key, v in config.items()}
            (out / "adapter_config.json").write_text(json.dumps(config, indent=2, default=str))
            # Unique ids per version: vLLM caches adapters by id, a new id loads the new weights.
            self.lora[name] = self._lora_request(name, self.version * 1000 + k + 1, out)
        old = self.workdir / f"v{self.version - 2:06d}"
        shutil.rmtree(old, ignore_errors=True)  # keep the previous version while requests may still use it

    def generate(self, requests: Sequence[GenRequest]) -> list[Completion]:
        prompts = [
            self.tokenizer.apply_chat_template(list(r.messages), add_generation_prompt=True, tokenize=False)
            for r in requests
        ]
        g = self.cfg.generation
        params = [
            sampling_params(g.temperature, g.max_new_tokens, r.seed, self.tokenizer.eos_token_id) for r in requests
        ]
        loras = [self.lora.get(self.team.slots[r.agent].adapter or "") for r in requests]
        outputs = self.engine.generate(prompts, params, lora_request=loras, use_tqdm=False)
        self.tokens_generated += sum(len(o.outputs[0].token_ids) for o in outputs)
        return [Completion(o.outputs[0].text, o.outputs[0].finish_reason == "length") for o in outputs]
