"""`maporl base build`: train the embedded tiny base from scratch (tokenizer + Qwen2-architecture model, SFT).

The shipped checkpoint is `maporl base build --out src/maporl/assets/base` (the defaults below). The learning rate
decays (cosine) and every `probe_every` steps the model's turn-0 accuracy is probed on trained and unseen forms; the
build saves the snapshot `probe.pick_snapshot` chooses. The exact command, settings, every probe and the choice are
written to `build_info.json` beside the weights.
"""

from __future__ import annotations

import copy
import json
import math
import platform
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from maporl.base.data import sft_example
from maporl.base.probe import BAND, PROBE_SEED, pick_snapshot, probe
from maporl.base.tokenizer import train_tokenizer
from maporl.tasks.arithmetic import ArithmeticTask
from maporl.utils import progress


@dataclass(frozen=True)
class BuildConfig:
    steps: int = 1200  # SFT steps; the shipped base is the snapshot the probes pick (step 800 of 1200)
    batch_size: int = 64
    lr: float = 1.5e-3
    warmup: int = 50
    lr_final_ratio: float = 0.1  # cosine decay to lr * this at `steps`: a constant rate made snapshots swing widely
    probe_every: int = 100  # probe turn-0 accuracy every k steps (0: never; then the last step is shipped)
    probe_problems: int = 200  # problems per family per probe
    seed: int = 0
    vocab_size: int = 512
    hidden_size: int = 128
    num_layers: int = 6
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 512
    snapshot_every: int = 0  # also save the model every k steps under out/snapshots/ (0: never)


_CLI_FIELDS = ("steps", "seed", "batch_size", "snapshot_every", "probe_every", "probe_problems")


def model_config(cfg: BuildConfig, tokenizer: PreTrainedTokenizerFast) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )


def encode_example(tokenizer: PreTrainedTokenizerFast, prompt, target: str) -> tuple[list[int], list[int]]:
    """Token ids and labels: the loss sees only the target and its end-of-turn token."""
    prompt_ids = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=True)
    if not isinstance(prompt_ids, list):  # transformers returns a BatchEncoding for some inputs
        prompt_ids = prompt_ids["input_ids"]
    target_ids = tokenizer(target + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    return prompt_ids + target_ids, [-100] * len(prompt_ids) + target_ids


def collate(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (x, y) in enumerate(rows):
        ids[r, : len(x)], labels[r, : len(y)], mask[r, : len(x)] = torch.tensor(x), torch.tensor(y), 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _render(prompt, target: str) -> str:
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in prompt)
    return text + f"<|im_start|>assistant\n{target}<|im_end|>\n"


def _save(path: Path, model: Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerFast, info: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")


def _info(cfg: BuildConfig, out: Path, model: Qwen2ForCausalLM, steps: int, loss: float | None, start: float) -> dict:
    return {
        "command": f"maporl base build --out {out} "
        + " ".join(f"--{k.replace('_', '-')} {getattr(cfg, k)}" for k in _CLI_FIELDS),
        "steps_taken": steps,
        "config": asdict(cfg),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "final_loss_ema": loss,
        "examples_seen": steps * cfg.batch_size,
        "minutes": round((time.time() - start) / 60, 2),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def build_base(out: Path, cfg: BuildConfig, quiet: bool = False) -> dict:
    """Train tokenizer and model, save both to `out`, return the build info (also saved as build_info.json)."""
    start = time.time()
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    tasks = {name: ArithmeticTask(name) for name in ("arith_chain", "arith_long", "arith_word")}

    def example(i: int):
        return sft_example(rng, tasks, seed=cfg.seed * 10_000_000 + i)

    corpus_examples = [example(-1 - i) for i in range(3000)]
    # Train BPE on fully rendered chat text so role names and template pieces get their own tokens.
    corpus = [_render(p, t) for p, t in corpus_examples]
    tokenizer = train_tokenizer(corpus, cfg.vocab_size)
    model = Qwen2ForCausalLM(model_config(cfg, tokenizer))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.01)

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        done = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (cfg.lr_final_ratio + (1 - cfg.lr_final_ratio) * 0.5 * (1 + math.cos(math.pi * done)))

    loss_ema = None
    probes: dict[int, dict[str, float]] = {}
    states: dict[int, tuple[dict, float]] = {}
    with progress(cfg.steps, "base build", quiet=quiet) as bar:
        for step in range(cfg.steps):
            rows = [encode_example(tokenizer, *example(step * cfg.batch_size + k)) for k in range(cfg.batch_size)]
            batch = collate(rows, tokenizer.pad_token_id)
            loss = model(**batch).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            opt.step()
            loss_ema = loss.item() if loss_ema is None else 0.95 * loss_ema + 0.05 * loss.item()
            bar.advance(f"loss {loss_ema:.3f}")
            if cfg.snapshot_every and (step + 1) % cfg.snapshot_every == 0 and step + 1 < cfg.steps:
                snap = _info(cfg, out, model, step + 1, loss_ema, start)
                _save(out / "snapshots" / f"step_{step + 1}", model, tokenizer, snap)
            if cfg.probe_every and ((step + 1) % cfg.probe_every == 0 or step + 1 == cfg.steps):
                probes[step + 1] = probe(model, tokenizer, cfg.probe_problems)
                states[step + 1] = (copy.deepcopy(model.state_dict()), loss_ema)
                bar.note(f"step {step + 1}: turn-0 accuracy {probes[step + 1]}")

    chosen = pick_snapshot(probes) if probes else cfg.steps
    if chosen in states:
        model.load_state_dict(states[chosen][0])
        loss_ema = states[chosen][1]
    info = _info(cfg, out, model, chosen, loss_ema, start)
    if probes:
        info["probes"] = {str(s): p for s, p in probes.items()}
        info["chosen_by"] = (
            f"best arith_word_unseen turn-0 accuracy among probes with arith_chain in {BAND} "
            f"({cfg.probe_problems} problems a family, seed {PROBE_SEED})"
        )
    _save(out, model, tokenizer, info)
    return info
