"""`maporl export`: a trained run as standard PEFT adapter folders (or merged models), with team.json and a card.

An export folder OUT holds
    agent_0/, agent_1/, ...  one per agent: adapter_config.json + adapter_model.safetensors, peft's own format (what
                             `PeftModel.from_pretrained(base, OUT/agent_k)` and `vllm serve --enable-lora
                             --lora-modules agent_k=OUT/agent_k` read); with --merge a full Hugging Face model
                             (base + adapter merged, tokenizer and chat template)
    team.json                the team: base model(s), agents and their folders, turns, prompt and answer formats
    config.yaml              the run's settings (base models named so they load anywhere): what `--checkpoint OUT`
                             discusses and evaluates with
    README.md                the model card; eval.json: the run's final evaluation, when OUT is its last checkpoint

`--checkpoint OUT` (`checkpoint.resolve`) reads it back through serving/layout.py.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from maporl.errors import UsageError
from maporl.serving import hub
from maporl.serving.layout import (
    ADAPTER_WEIGHTS,
    FORMAT,
    FORMAT_VERSION,
    QUESTION,
    TEAM_FILE,
    folder_of,
)

# Writing an export.


def base_reference(name: str) -> str:
    """How adapter_config.json names a base: a Hub name as is, a local folder by its absolute path, the embedded
    base by the absolute path of the copy shipped in the installed package (peft and vLLM know no 'embedded')."""
    from maporl.models import EMBEDDED, EMBEDDED_DIR

    if name == EMBEDDED:
        return str(EMBEDDED_DIR.resolve())
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve())
    if hub.is_hub_name(name):
        return name
    raise UsageError(
        f"the run's base model {name} is not found; pass where it is now, e.g. model.name_or_path=PATH "
        "(or model.agent_models=[PATH,...] for a team of several bases)"
    )


def _portable(name: str) -> str:
    """A base as config.yaml names it: 'embedded' stays (every install has it), others as `base_reference`."""
    from maporl.models import EMBEDDED

    return name if name == EMBEDDED else base_reference(name)


def _check_out(out: Path, ckpt: Path, force: bool) -> None:
    if out == ckpt or ckpt in out.parents or out in ckpt.parents:
        raise UsageError(
            f"--out {out} overlaps the checkpoint {ckpt}; pass a folder outside the run, e.g. exports/NAME"
        )
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; pass a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise UsageError(f"--out {out} is not empty; pass a new folder, or --force to replace the export in it")
        if not (out / TEAM_FILE).is_file():  # --force deletes: only ever an earlier export
            raise UsageError(f"--out {out} is not empty and holds no maporl export; --force replaces only an export")


def _lora_config(cfg, state: dict, base: str):
    """peft's LoraConfig of an adapter as training built it, with the base it belongs to and the modules it adapts
    listed as peft's save_pretrained lists what "all-linear" became: every adapted module by its full name."""
    from maporl.team import lora_config

    config = lora_config(cfg)
    config.target_modules = sorted({key.removeprefix("base_model.model.").split(".lora_")[0] for key in state})
    config.base_model_name_or_path = base
    config.inference_mode = True  # as peft's save_pretrained writes it
    return config


def _write_adapter(dest: Path, state: dict, config) -> None:
    from safetensors.torch import save_file

    dest.mkdir(parents=True)
    # The checkpoint's tensors are get_peft_model_state_dict's: keys without the adapter's name, as peft saves them.
    save_file({k: v.contiguous() for k, v in state.items()}, dest / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    config.save_pretrained(str(dest))


def _merge(base: str, adapter: Path, dest: Path) -> None:
    """base + adapter merged into a full model folder, with the base's tokenizer (and chat template). The merge runs
    in float32 on a fresh copy of the base; the weights are saved in the base's own dtype."""
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    from maporl.models import DTYPES, load_model, resolve_model_dir

    path = resolve_model_dir(base)
    meta = json.loads((path / "config.json").read_text())
    dtype = DTYPES.get(meta.get("dtype") or meta.get("torch_dtype") or "float32", torch.float32)
    model = PeftModel.from_pretrained(load_model(path, "float32"), str(adapter)).merge_and_unload()
    model.to(dtype).save_pretrained(dest)
    AutoTokenizer.from_pretrained(path).save_pretrained(dest)


def export_run(
    source: str | Path,
    out: str | Path,
    *,
    merge: bool = False,
    force: bool = False,
    overrides: Sequence[str] = (),
    command: str | None = None,
    hub_name: str | None = None,
) -> dict:
    """Export the team of `source` (a run directory: its latest checkpoint, or a checkpoint) to `out`; returns the
    team.json written. `overrides` fix the run's settings where they no longer hold (a base model that moved);
    `hub_name`, where the export is bound for the Hub, is how its model card names it."""
    from safetensors.torch import load_file

    from maporl import checkpoint
    from maporl.config import dump_yaml, load_config

    src = Path(source).expanduser()
    if not src.is_dir():  # runs are local: no Hub lookup for a mistyped path
        raise UsageError(f"{source}: no such run directory or checkpoint; pass e.g. runs/tiny")
    if (src / TEAM_FILE).is_file():
        raise UsageError(f"{source} is already an export; copy the folder, or export the run it came from")
    run_cfg, ckpt, _ = checkpoint.resolve(str(source))
    if ckpt is None:
        raise UsageError(f"{source} is a model directory, not a maporl run; export a run directory or a checkpoint")
    ckpt, out = ckpt.resolve(), Path(out).expanduser().resolve()
    _check_out(out, ckpt, force)
    cfg = load_config(None, list(overrides), base=run_cfg)
    n, models = cfg.discussion.num_agents, cfg.model
    bases = list(models.agent_models) or [models.name_or_path] * n
    refs = {name: base_reference(name) for name in bases}
    files = checkpoint.adapter_files(ckpt)
    names = [next((a for a in (f"agent{i}", "shared") if a in files), None) for i in range(n)]
    if None in names:
        raise UsageError(f"checkpoint {ckpt} lacks agent {names.index(None) + 1}'s adapter; export a complete run")
    states = {name: load_file(files[name]) for name in set(names)}

    tmp = out.parent / f".{out.name}.export-tmp"  # written whole, then renamed: never half an export at --out
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
    except OSError as e:
        raise UsageError(f"cannot write to {out.parent} ({e.strerror}); pass a writable --out") from None
    try:
        agents = []
        for i, (name, base) in enumerate(zip(names, bases, strict=True)):
            folder, config = folder_of(i), _lora_config(cfg, states[name], refs[base])
            if not merge:
                _write_adapter(tmp / folder, states[name], config)
            elif names.index(name) == i:  # a shared adapter is merged once, into the first agent's folder
                _write_adapter(tmp / ".adapters" / folder, states[name], config)
                _merge(base, tmp / ".adapters" / folder, tmp / folder)
            else:
                folder = folder_of(names.index(name))
            agents.append({"agent": i, "folder": folder, "adapter": name, "base_model": refs[base]})
        shutil.rmtree(tmp / ".adapters", ignore_errors=True)
        portable = dataclasses.replace(
            models,
            name_or_path=_portable(models.name_or_path),
            agent_models=tuple(_portable(m) for m in models.agent_models),
        )
        (tmp / "config.yaml").write_text(dump_yaml(dataclasses.replace(cfg, model=portable)))
        run_dir = ckpt.parent.parent
        metrics = None
        if (run_dir / "eval.json").is_file() and checkpoint.latest(run_dir) == ckpt:
            from maporl.evaluation import read_eval

            metrics = read_eval(run_dir / "eval.json")
            shutil.copyfile(run_dir / "eval.json", tmp / "eval.json")
        kind = "merged" if merge else "adapters"
        command = command or f"maporl export {source} --out {out}" + (" --merge" if merge else "")
        team = describe(cfg, kind, agents, states[names[0]], ckpt, metrics, command)
        (tmp / TEAM_FILE).write_text(json.dumps(team, indent=2) + "\n")
        (tmp / "README.md").write_text(hub.model_card(team, metrics, hub_name or str(out)))
        if out.exists():
            shutil.rmtree(out)  # _check_out allowed it: empty, or an earlier export with --force
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return team


def _question_format(task_name: str) -> str:
    """The question as the task shows it to the agents (`Task.render_question`), with {question} in its place."""
    from maporl.records import Problem
    from maporl.tasks import BUILTIN, get_task
    from maporl.tasks.files import render_for

    kind = task_name.partition(":")[0]
    if kind in ("gsm8k", "anli", "jsonl"):  # hub and file tasks render by kind: no need to load their data
        return render_for(kind, QUESTION)
    try:
        if task_name in BUILTIN or task_name == "gsm_symbolic":
            return get_task(task_name).render_question(Problem("format", QUESTION, "", task_name))
    except UsageError:  # gsm_symbolic without reasoning-gym here: the question alone is the best that can be said
        pass
    return QUESTION


def _note(kind: str) -> str:
    same = "every agent folder holds the same weights" if kind == "adapters" else "every agent uses agent_0"
    return f"one adapter was trained for every seat: {same}"


def describe(cfg, kind: str, agents: list[dict], state: dict, ckpt: Path, metrics: dict | None, command: str) -> dict:
    """team.json: everything a program (or a person) needs to run the team without maporl's config schema."""
    from maporl import __version__
    from maporl.models import EMBEDDED
    from maporl.prompts import agent_label, discussion_prompt, first_turn_prompt, peers_of

    n, d = cfg.discussion.num_agents, cfg.discussion
    bases = list(cfg.model.agent_models) or [cfg.model.name_or_path] * n
    base_models = []
    for name, agent in dict(zip(bases, agents, strict=True)).items():
        entry = {"name_or_path": name, "path": agent["base_model"]}
        if name == EMBEDDED:
            entry["note"] = (
                "the tiny base shipped inside the maporl package (maporl/assets/base); adapter_config.json names its "
                "path on the machine that exported; elsewhere point base_model_name_or_path at that machine's copy: "
                "python -c 'from maporl.models import EMBEDDED_DIR; print(EMBEDDED_DIR)'"
            )
        base_models.append(entry)
    for agent in agents:
        agent["name"] = agent_label(agent["agent"])
        if kind == "merged":  # a merged folder is a whole model: the base it came from is history, not a need
            agent["merged_from"] = agent.pop("base_model")
    peers = [(j, f"{{answer of {agent_label(j)}}}") for j in peers_of(0, n, d.peers_shown)]
    anli = cfg.task.name.partition(":")[0] == "anli"
    state_file = json.loads((ckpt / "state.json").read_text()) if (ckpt / "state.json").is_file() else {}
    shared = len({a["adapter"] for a in agents}) == 1 and n > 1
    modules = sorted({m.rsplit(".", 1)[-1] for m in _lora_config(cfg, state, "").target_modules})  # by kind
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "maporl_version": __version__,
        "kind": kind,
        "num_agents": n,
        "turns": d.turns,
        "base_models": base_models,
        "agents": agents,
        "shared_adapter": shared,
        "note": _note(kind) if shared else "",
        "lora": {"r": cfg.algo.lora_rank, "alpha": cfg.algo.lora_alpha, "target_modules": modules},
        "prompt_format": {
            "messages": "chat messages, rendered with the tokenizer's chat template (add_generation_prompt=True)",
            "question": _question_format(cfg.task.name),
            "turn_0": list(first_turn_prompt(QUESTION)),
            "turn_t": list(discussion_prompt(QUESTION, "{own answer at turn t-1}", peers)),
            "turn_t_agent": agent_label(0),
            "peers_shown": d.peers_shown,
            "peers": "each agent sees its own and its shown peers' final answers of the previous turn (the parsed "
            "answer, at most 64 characters; 'no answer' when none): the next peers_shown agents in a circle, -1 all",
        },
        "answer_format": {
            "task": cfg.task.name,
            "final_answer": "The answer is entailment | neutral | contradiction" if anli else "The answer is N",
            "parsed": "the last final-answer phrase in the reply's last 4 KiB"
            + ("" if anli else " ('#### N' and '\\boxed{N}' count too; N a number, commas and $ dropped)")
            + "; a reply cut off at max_new_tokens has none",
        },
        "generation": {"temperature": cfg.generation.temperature, "max_new_tokens": cfg.generation.max_new_tokens},
        "config": "config.yaml",
        "evaluation": None
        if metrics is None
        else {
            "file": "eval.json",
            "task": cfg.task.name,
            "num_problems": metrics["num_problems"],
            "acc_per_turn": metrics["acc_per_turn"],
            "majority_per_turn": metrics["majority_per_turn"],
        },
        "source": {"run": str(ckpt.parent.parent), "checkpoint": str(ckpt), "step": state_file.get("step")},
        "commands": {
            "train": f"maporl train --config config.yaml --out {ckpt.parent.parent}",
            "export": command,
        },
    }
