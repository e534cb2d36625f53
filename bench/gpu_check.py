"""GPU check for a machine with CUDA torch, transformers and peft and nothing else: no network, no model weights.

    PYTHONPATH=src python3 bench/gpu_check.py                      # one GPU, real shapes (sized for <= 8 minutes)
    PYTHONPATH=src python3 bench/gpu_check.py --device cpu --tiny  # the same phases on CPU, tiny shapes (CI)
    PYTHONPATH=src python3 bench/gpu_check.py --smoke              # the same as --device cpu --tiny

Models of real architectures are built from the config.json files in bench/shapes/ (Qwen2.5-0.5B, -1.5B and -7B
Instruct) with random weights; prompts are token ids (a tokenizer whose words are ids, built here), and every answer
runs to its full length (the end-of-turn id is one the model cannot produce). One JSON line per phase, each line also
appended to the log (--log) as it is printed:

- env: versions and the device;
- generation: HF generation tokens/s, 3 agents' LoRA adapters in mixed batches (0.5B shape, 288 rows per call);
- step: one co-training step (PPO, 2 agents x 2 turns, answers of 300 tokens after prompts of 300) with the memory
  options (activation checkpointing, bf16 autocast, micro-batches of 8,192 tokens) on the 1.5B and 7B shapes: the
  phase split, each phase's peak CUDA memory, and the update's peak beside the arithmetic of docs/real_models.md;
- train_embedded: `maporl train` of the embedded model for 10 steps on the device (in a process of its own; with
  --tiny, 2 steps in this one);
- logprobs: the same answers' log-probabilities on the CPU and on the device, and the sampler's against the update's.

Each of these lines has the keys phase and phase_s (and error, if the phase failed). Last line: one JSON object,
{"phase": "done", "failed": [the phases that failed]}. Exit status 1 if a phase failed or a tolerance was missed.
--smoke (the same as --device cpu --tiny) runs every phase in seconds: tests/test_gpu_check.py checks each line, and
scripts/test_lowest.sh runs it with the lowest supported versions. Packages beyond torch, transformers, peft,
safetensors, tokenizers, pyyaml, rich and numpy are not needed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ROOT / "bench" / "shapes"
sys.path.insert(0, str(ROOT / "src"))  # PYTHONPATH=src is then optional

import torch  # noqa: E402

from maporl.models.memory import update_peak_estimate  # noqa: E402

LOGPROB_TOLERANCE = 1e-4  # fp32 on both sides: CPU vs CUDA kernels, and the sampler's pass vs the update's
LOG: Path | None = None


def say(obj) -> None:
    """Print a line (a dict as JSON) and append it to the log at once: a run cut off keeps what it printed."""
    line = obj if isinstance(obj, str) else json.dumps(obj)
    print(line, flush=True)
    if LOG is not None:
        with LOG.open("a") as f:
            f.write(line + "\n")


def shape_config(name: str, tiny: bool):
    """A shipped shape's config; `tiny`: the same architecture scaled down to run in seconds on a CPU."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(SHAPES / name)
    if tiny:
        kv_ratio = config.num_attention_heads // config.num_key_value_heads
        config.update(
            dict(
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=max(1, 4 // kv_ratio),
                vocab_size=2048,
                max_window_layers=2,
            )
        )
    config._name_or_path = ""  # built in code: nothing on disk has its weights (peft would compare vocabularies)
    return config


def id_tokenizer(vocab_size: int):
    """Words are token ids ("17 4 2051" is [17, 4, 2051] and decodes back); other words are [UNK] (1), [PAD] is 0,
    and the end of turn, [EOS], is `vocab_size`: an id the model cannot produce, so every answer runs to
    max_new_tokens. Built in code: no tokenizer file is needed for any shape."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1} | {str(i): i for i in range(2, vocab_size)} | {"[EOS]": vocab_size}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        eos_token="[EOS]",
        padding_side="left",
        chat_template="{% for m in messages %}{{ m['content'] }} {% endfor %}",
    )


def random_model(config, cfg):
    """Random weights of the shape in the check's dtype, built on its device (a 7B model initialises in seconds
    there)."""
    from transformers import AutoModelForCausalLM

    from maporl.models import DTYPES

    with torch.device(cfg.model.device):
        model = AutoModelForCausalLM.from_config(config, dtype=DTYPES[cfg.model.dtype])
    model.generation_config.eos_token_id = None  # the shape's own end-of-turn id would end answers early
    model.generation_config.bos_token_id = None
    return model.eval()


def questions(n: int, length: int, vocab: int, seed: int = 0) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab, (n, length), generator=g)
    return [" ".join(map(str, row.tolist())) for row in ids]


def question_file(path: Path, n: int, length: int, vocab: int) -> str:
    """A `jsonl:` task of id questions (answer "0": every answer is scored wrong, the update runs all the same)."""
    path.write_text("".join(json.dumps({"question": q, "answer": "0"}) + "\n" for q in questions(n, length, vocab)))
    return f"jsonl:{path}"


def check_config(args, *overrides: str):
    from maporl.config import load_config

    dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    return load_config(None, [f"model.device={args.device}", f"model.dtype={dtype}", *overrides])


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_gib(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None


def free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def phase_env(args) -> dict:
    import peft
    import transformers

    cuda = torch.cuda.is_available()
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name() if cuda and args.device.startswith("cuda") else "cpu",
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
    }


def phase_generation(args) -> dict:
    from maporl.generation import GenRequest
    from maporl.generation.registry import hf_generator
    from maporl.prompts import first_turn_prompt
    from maporl.team import team_of

    shape, agents = "qwen2.5-0.5b-instruct", 3
    rows, prompt, new = (24, 16, 16) if args.tiny else (288, 128, 256)
    config = shape_config(shape, args.tiny)
    tokenizer = id_tokenizer(config.vocab_size)
    cfg = check_config(
        args,
        f"discussion.num_agents={agents}",
        f"generation.max_new_tokens={new}",
        f"generation.batch_size={rows}",
        "generation.merge_adapters=never",
    )
    team = team_of(
        cfg,
        random_model(config, cfg),
        tokenizer,
        with_adapters=True,
    )
    generator = hf_generator(cfg, team)
    requests = [
        GenRequest(first_turn_prompt(q), k % agents, seed=k)
        for k, q in enumerate(questions(rows, prompt, config.vocab_size))
    ]
    generator.generate(requests[: 2 * agents])  # warm-up: kernels, allocator
    free(args.device)
    sync(args.device)
    t0 = time.perf_counter()
    completions = generator.generate(requests)
    sync(args.device)
    seconds = time.perf_counter() - t0
    lengths = {len(c.token_ids) for c in completions}
    tokens = sum(len(c.token_ids) for c in completions)
    return {
        "shape": shape,
        "agents": agents,
        "rows": rows,
        "prompt_tokens": prompt,
        "new_tokens": new,
        "full_length": lengths == {new},
        "seconds": round(seconds, 2),
        "tokens_per_s": round(tokens / seconds),
        "peak_gib": peak_gib(args.device),
    }


def phase_step(args, shape: str) -> dict:
    from maporl import trainer
    from maporl.team import team_of

    agents, turns, per_step = 2, 2, 8
    prompt, new, budget, rows = (16, 16, 128, 16) if args.tiny else (300, 300, 8192, 16)
    config = shape_config(shape, args.tiny)
    with tempfile.TemporaryDirectory() as tmp:
        task = question_file(Path(tmp) / "questions.jsonl", 200, prompt, config.vocab_size)
        cfg = check_config(
            args,
            "algo.name=ppo",
            f"discussion.num_agents={agents}",
            f"discussion.turns={turns}",
            f"train.problems_per_step={per_step}",
            "algo.rollouts_per_problem=1",
            f"generation.max_new_tokens={new}",
            "generation.temperature=0.7",
            "model.autocast=true",
            "model.activation_checkpointing=true",
            f"algo.micro_batch_tokens={budget}",
            f"algo.micro_batch_size={rows}",
            "algo.lr=1e-5",
            "train.max_steps=2",
            "train.checkpoint_every=0",
            "train.transcripts_every=0",
            f"task.name={task}",
            "run_name=gpu-check",
        )
        model = random_model(config, cfg)
        team = team_of(cfg, model, id_tokenizer(config.vocab_size), with_adapters=True)
        trainer.train(cfg, Path(tmp) / "run", quiet=True, final_eval=False, team=team)
        last = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    # The second step: the first one also pays for kernel selection and the optimizer state's first allocation.
    measured = {k: round(v, 2) for k, v in last.items() if k.startswith(("time/", "memory/"))}
    row_tokens = prompt + new + 12  # a turn-1 prompt adds "You said: no answer / Agent 2 said: ... Answer again."
    estimate = update_peak_estimate(
        config.to_dict(), agents, cfg.algo.lora_rank, min(rows, budget // row_tokens), row_tokens, new
    )
    out = {
        "shape": shape,
        "agents": agents,
        "turns": turns,
        "answers": per_step * agents * turns,
        "prompt_tokens": prompt,
        "new_tokens": new,
        "micro_batch_tokens": budget,
        **measured,
        "estimate_update_peak_gib": round(estimate["total"] / 2**30, 2),
    }
    if "memory/update_peak_gib" in measured:
        out["measured_over_estimate"] = round(measured["memory/update_peak_gib"] * 2**30 / estimate["total"], 2)
    del model, team
    return out


def phase_train_embedded(args) -> dict:
    steps = 2 if args.tiny else 10
    with tempfile.TemporaryDirectory() as tmp:
        extra = ["train.problems_per_step=2", "eval.num_problems=8", "discussion.turns=2"] if args.tiny else []
        command = [
            "train",
            "--quiet",
            "--overwrite",
            "--max-steps",
            str(steps),
            "--out",
            f"{tmp}/run",
            f"model.device={args.device}",
            "eval.num_problems=100",
            *extra,
        ]
        t0 = time.perf_counter()
        if args.tiny:  # in this process: a fresh one would spend longer importing than training
            from maporl.cli import main as cli

            if cli(command):
                raise RuntimeError("maporl train failed")
        else:  # a process of its own, as a user's: its memory is its own
            env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
            done = subprocess.run([sys.executable, "-m", "maporl", *command], env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"maporl train exited {done.returncode}: {done.stderr.strip()[-500:]}")
        seconds = time.perf_counter() - t0
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
        evaluation = json.loads((Path(tmp) / "run" / "eval.json").read_text())
    steps_done = [r for r in rows if "time/step" in r]
    later = [r["time/step"] for r in steps_done[1:]] or [steps_done[0]["time/step"]]
    return {
        "steps": len(steps_done),
        "seconds": round(seconds, 1),
        "step_s": round(sum(later) / len(later), 2),
        "generation_s": round(sum(r["time/generation"] for r in steps_done[1:] or steps_done) / len(later), 2),
        "update_s": round(sum(r["time/update"] for r in steps_done[1:] or steps_done) / len(later), 2),
        "eval_acc_per_turn": [round(a, 3) for a in evaluation["acc_per_turn"]],
    }


def phase_logprobs(args) -> dict:
    """The embedded model with two agents' (non-zero) adapters: answers sampled on the device, their log-probs from
    the update's forward on the CPU and on the device, and the sampler's own, all in fp32."""
    from peft import set_peft_model_state_dict

    from maporl import discussion
    from maporl.episodes import encode_episodes, sampled_logprobs
    from maporl.generation.registry import build_generator
    from maporl.policy import Policy
    from maporl.tasks import get_task
    from maporl.team import build_team

    def team_on(device: str):
        cfg = check_config(
            args,
            f"model.device={device}",
            "model.dtype=float32",
            "discussion.num_agents=2",
            "discussion.turns=2",
            "generation.max_new_tokens=32",
        )
        return cfg, build_team(cfg, with_adapters=True)

    cfg_cpu, cpu = team_on("cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in cpu.models["base"].named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    cfg_dev, dev = team_on(args.device)
    for (key, name), state in cpu.adapter_states().items():
        set_peft_model_state_dict(dev.models[key], state, adapter_name=name)
    task = get_task(cfg_dev.task.name)
    transcripts = discussion.run(
        task.sample(16, 0, "eval"), task, build_generator(cfg_dev, dev), cfg_dev.discussion, 0
    )
    episodes = [(b, i, t) for b in range(len(transcripts)) for i in range(2) for t in range(2)]
    batch = encode_episodes(cpu.tokenizer(0), transcripts, episodes)
    mask = batch.answer_mask.bool()
    with torch.no_grad():
        on_cpu = Policy(cpu, False).forward(batch, with_values=False)[0][mask]
        on_dev = Policy(dev, False).forward(batch, with_values=False)[0].cpu()[mask]
    sampler = sampled_logprobs(transcripts, episodes, batch)[mask]
    cpu_vs_device = (on_cpu - on_dev).abs().max().item()
    sampler_vs_update = (sampler - on_dev).abs().max().item()
    return {
        "answers": len(episodes),
        "tokens": int(mask.sum()),
        "max_abs_cpu_vs_device": cpu_vs_device,
        "max_abs_sampler_vs_update": sampler_vs_update,
        "tolerance": LOGPROB_TOLERANCE,
        "ok": max(cpu_vs_device, sampler_vs_update) <= LOGPROB_TOLERANCE,
    }


def main(argv: list[str] | None = None) -> int:
    global LOG
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:1, or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes and sizes: every phase in seconds on a CPU")
    parser.add_argument("--smoke", action="store_true", help="the CPU form: --device cpu --tiny")
    parser.add_argument("--log", default=os.path.join(os.environ.get("OUT", "runs/gpu_check"), "gpu_check.log"))
    parser.add_argument("--phases", default="env,generation,step,train_embedded,logprobs", help="which, in order")
    args = parser.parse_args(argv)
    if args.smoke:
        args.device, args.tiny = "cpu", True
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            f"gpu_check: --device {args.device} but torch {torch.__version__} sees no GPU; run with --device cpu "
            "--tiny for the CPU form",
            file=sys.stderr,
        )
        return 2
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars would fill the log
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)  # peft 0.21
    LOG = Path(args.log)
    LOG.parent.mkdir(parents=True, exist_ok=True)
    say(f"# gpu_check {time.strftime('%Y-%m-%d %H:%M:%S')} device={args.device} tiny={args.tiny} log={LOG}")
    steps = ["qwen2.5-1.5b-instruct", "qwen2.5-7b-instruct"]
    phases = {
        "env": [("env", lambda: phase_env(args))],
        "generation": [("generation", lambda: phase_generation(args))],
        "step": [(f"step_{s.split('-')[1]}", lambda s=s: phase_step(args, s)) for s in steps],
        "train_embedded": [("train_embedded", lambda: phase_train_embedded(args))],
        "logprobs": [("logprobs", lambda: phase_logprobs(args))],
    }
    failed = []
    for key in args.phases.split(","):
        for name, run in phases[key]:
            t0 = time.perf_counter()
            try:
                result = run()
            except Exception as e:  # one phase's failure is reported and the others still run
                result = {"error": f"{type(e).__name__}: {e}"}
                say("# " + traceback.format_exc().replace("\n", "\n# ").rstrip("# \n"))
            say({"phase": name, **result, "phase_s": round(time.perf_counter() - t0, 1)})
            if "error" in result or result.get("ok") is False:
                failed.append(name)
            free(args.device)
    say({"phase": "done", "failed": failed})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
