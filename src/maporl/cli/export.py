"""`maporl export RUN --out DIR`: the trained team as standard PEFT adapters (or merged models), optionally pushed to
the Hugging Face Hub (`maporl.serving.export`, `maporl.serving.hub`)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path


def add_parser(sub) -> None:
    e = sub.add_parser(
        "export",
        help="write a trained team as PEFT adapter folders (or merged models) with team.json and a model card",
        description="One folder per agent, DIR/agent_k: adapter_config.json + adapter_model.safetensors, what "
        "PeftModel.from_pretrained(base, DIR/agent_k) and `vllm serve BASE --enable-lora --lora-modules "
        "agent_k=DIR/agent_k` read (--merge: a full model per agent); team.json, config.yaml and README.md beside "
        "them. `maporl eval --checkpoint DIR` evaluates the export as it did the run.",
    )
    e.add_argument(
        "source", metavar="RUN_OR_CHECKPOINT", help="a run directory (its latest checkpoint) or a checkpoint"
    )
    e.add_argument("--out", required=True, help="the export folder (new or empty; --force replaces an earlier export)")
    e.add_argument("--merge", action="store_true", help="merge each agent's adapter into a full copy of its base")
    e.add_argument("--force", action="store_true", help="replace the earlier export in --out")
    e.add_argument("--push-to-hub", metavar="ORG/NAME", help="then upload the folder to this Hub model repository")
    e.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository private")
    e.add_argument(
        "overrides",
        nargs="*",
        metavar="section.key=value",
        help="fix the run's settings, e.g. model.name_or_path=PATH",
    )


def run(args: argparse.Namespace) -> None:
    from maporl.errors import UsageError
    from maporl.serving import hub
    from maporl.serving.export import export_run

    if args.private and not args.push_to_hub:
        raise UsageError("--private applies to --push-to-hub; add --push-to-hub ORG/NAME or drop --private")
    if args.push_to_hub:
        hub.check_push(args.push_to_hub, args.out)
    flags = [("--merge", args.merge), ("--push-to-hub", args.push_to_hub), ("--private", args.private)]
    words = [w for flag, value in flags if value for w in (flag, *([value] if isinstance(value, str) else []))]
    command = shlex.join(["maporl", "export", args.source, "--out", args.out, *words, *args.overrides])
    team = export_run(
        args.source,
        args.out,
        merge=args.merge,
        force=args.force,
        overrides=args.overrides,
        command=command,
        hub_name=args.push_to_hub,
    )
    out = Path(args.out)
    print(f"exported {team['num_agents']} agents ({team['kind']}) of {team['source']['checkpoint']} to {out}")
    for agent in team["agents"]:
        print(f"  {agent['name']}: {out / agent['folder']}")
    print(f"evaluate it: maporl eval --checkpoint {out}")
    if args.push_to_hub:
        print(f"pushed: {hub.push(out, args.push_to_hub, private=args.private)}")
