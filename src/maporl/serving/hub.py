"""A maporl export on the Hugging Face Hub: pushing it, and its model card. Hub names as models and teams (read
through the local cache only) are `models/hub.py`."""

from __future__ import annotations

import os
from pathlib import Path

from maporl.errors import UsageError
from maporl.models.hub import is_hub_name, is_repo_id


def check_push(repo_id: str, folder: Path | str = "DIR") -> None:
    """Refuse a push that cannot work before anything is written: a malformed name, or offline mode."""
    if not is_repo_id(repo_id):
        raise UsageError(f"--push-to-hub {repo_id!r} is not a Hub repository name; pass ORG/NAME, e.g. me/my-team")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise UsageError(
            f"cannot push to {repo_id}: HF_HUB_OFFLINE is set; unset it on a machine with network, or upload "
            f"{folder} later with `hf upload {repo_id} {folder}`"
        )


def push(folder: Path, repo_id: str, *, private: bool = False, message: str = "maporl export") -> str:
    """Upload `folder` to the Hub model repository `repo_id` (created if missing); returns its URL."""
    check_push(repo_id, folder)
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model", commit_message=message)
    except Exception as e:  # no token, no network, no permission: one line with the cause and the way out
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(
            f"could not push {folder} to {repo_id} ({reason}); log in with `hf auth login` (or set HF_TOKEN) on a "
            f"machine with network, or upload it later with `hf upload {repo_id} {folder}`"
        ) from None
    return str(url)


def _block(text: str, lang: str = "") -> str:
    return f"```{lang}\n{text}\n```\n"


def _base_of(agent: dict) -> str:
    return agent.get("base_model") or agent["merged_from"]


def _header(team: dict, merged: bool) -> list[str]:
    """The card's metadata: the Hub links a `base_model` that names a Hub repository; a local path it would not."""
    bases = dict.fromkeys(_base_of(a) for a in team["agents"])
    on_hub = [b for b in bases if is_repo_id(b)]  # a local base is an absolute path
    lines = ["---", f"library_name: {'transformers' if merged else 'peft'}"]
    lines += ["base_model:", *(f"- {b}" for b in on_hub)] if on_hub else []
    return [*lines, "tags:", "- maporl", "- multi-agent", *([] if merged else ["- lora"]), "---", ""]


def _usage(team: dict, where: str, merged: bool) -> list[str]:
    """How to run the team with maporl, and each agent alone with peft, transformers or vLLM (from a local copy)."""
    lines = ["## Use", "", "With maporl (the discussions, and the accuracy, of the run):", ""]
    lines += [_block(f'maporl eval --checkpoint {where}\nmaporl discuss "What is 17+25-9?" --checkpoint {where}')]
    local = where
    if is_hub_name(where):  # peft and vLLM take the agents' subfolders from a local copy
        local = "team"
        lines += ["Each agent alone needs a local copy first:", "", _block(f"hf download {where} --local-dir {local}")]
    first = team["agents"][0]
    if merged:
        lines += ["Each agent alone, with transformers (`AutoModelForCausalLM.from_pretrained`) or vLLM:", ""]
        return lines + [_block(f"vllm serve {local}/{first['folder']}")]
    lines += ["Each agent alone, with peft:", ""]
    lines += [_block(
        "from peft import PeftModel\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f'base = AutoModelForCausalLM.from_pretrained("{first["base_model"]}")\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{first["base_model"]}")\n'
        f'agent = PeftModel.from_pretrained(base, "{local}/{first["folder"]}")',
        "python",
    )]  # fmt: skip
    from maporl.generation.vllm import max_lora_rank  # vLLM takes only some ranks as its maximum

    lines += ["Every agent from one vLLM server per base model, each by its folder's name:", ""]
    for base in dict.fromkeys(_base_of(a) for a in team["agents"]):
        mods = [f"{a['folder']}={local}/{a['folder']}" for a in team["agents"] if a["base_model"] == base]
        flags = f"--enable-lora --max-loras {len(mods)} --max-lora-rank {max_lora_rank(team['lora']['r'])}"
        lines += [_block(f"vllm serve {base} {flags} --lora-modules {' '.join(mods)}")]
    return lines


def model_card(team: dict, metrics: dict | None, where: str) -> str:
    """An export's README.md (team.json in prose): the Hub shows it as the model card, its header as metadata.
    `where` names the export in the usage examples: its folder, or its Hub name when it is pushed."""
    n, merged, prompts, answers = (
        team["num_agents"],
        team["kind"] == "merged",
        team["prompt_format"],
        team["answer_format"],
    )
    what = "a full model (base and adapter merged)" if merged else "a LoRA adapter in peft's format"
    lines = [
        *_header(team, merged),
        f"# A team of {n} agents co-trained with MAPoRL",
        "",
        f"{n} agents discuss a question for {team['turns']} turns: at turn 0 each answers alone; at every later turn "
        "each sees its own and its peers' previous final answers and answers again. Trained with maporl "
        f"{team['maporl_version']} (multi-agent post-co-training with RL, arXiv 2502.18439) on `{answers['task']}`, "
        f"checkpoint step {team['source']['step']}. Each agent's folder holds {what}; `team.json` says all of this "
        "for programs.",
        "",
        f"| agent | folder | {'merged from' if merged else 'base model'} |",
        "|---|---|---|",
        *(f"| {a['name']} | `{a['folder']}/` | `{_base_of(a)}` |" for a in team["agents"]),
        "",
        *([team["note"], ""] if team["note"] else []),
        *(f"`{b['name_or_path']}`: {b['note']}\n" for b in team["base_models"] if "note" in b),
        "## Prompt format",
        "",
        f"{prompts['messages'][0].upper()}{prompts['messages'][1:]}. The question as the agents see it:",
        "",
        _block(prompts["question"]),
        "Turn 0, one user message:",
        "",
        _block(prompts["turn_0"][0]["content"]),
        f"Turn t > 0, one user message (here {prompts['turn_t_agent']}'s):",
        "",
        _block(prompts["turn_t"][0]["content"]),
        f"{prompts['peers'][0].upper()}{prompts['peers'][1:]}.",
        "",
        "## Answer format",
        "",
        f"Each reply ends with `{answers['final_answer']}`; the final answer is {answers['parsed']}. Sampling: "
        f"temperature {team['generation']['temperature']}, at most {team['generation']['max_new_tokens']} new tokens.",
        "",
        "## Evaluation",
        "",
    ]
    if metrics is None:
        lines += [f"Not evaluated here (not the run's last checkpoint): `maporl eval --checkpoint {where}`.", ""]
    else:
        from maporl.evaluation import format_table

        lines += [f"The run's final evaluation on `{team['evaluation']['task']}`:", "", _block(format_table(metrics))]
    lines += _usage(team, where, merged)
    lines += ["## How it was made", "", f"The run `{team['source']['run']}`; its `config.yaml` (here) holds every "
              "setting it used. Train it again, and export it:", ""]  # fmt: skip
    lines += [_block(f"{team['commands']['train']}\n{team['commands']['export']}")]
    return "\n".join(lines)
