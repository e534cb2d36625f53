"""The Python API: what the `maporl` command does, as functions (re-exported by `maporl/__init__.py`).

    from maporl import load_config, train, evaluate, discuss

    cfg = load_config("tiny", ["train.max_steps=20"])       # a shipped recipe (or a YAML path), dotted overrides
    run = train(cfg, "runs/example")                         # -> {"checkpoint", "eval", "steps", "minutes"}
    metrics = evaluate("runs/example", problems=100)         # a run, a checkpoint, a model directory, or None
    transcript = discuss("What is 17 + 25?", "runs/example")

A *source* is a run directory (its latest checkpoint), a checkpoint directory, a Hugging Face model directory, or
None for the shipped embedded base; a run brings its own settings (agents, turns, task, sampling), on which `config`
(a YAML file or a shipped recipe's name) and then `overrides` are laid.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from maporl.config import Config, load_config, save_config
from maporl.generation import Generator
from maporl.records import Problem, Transcript, write_transcripts

Source = str | Path | None


def load_team(source: Source = None, config: str | Path | None = None, overrides: Sequence[str] = ()):
    """(Config, Generator) of the team `source` names (see the module docstring): what `evaluate`, `discuss`,
    `maporl eval`, `maporl discuss` and `maporl compare` sample from."""
    from maporl import checkpoint
    from maporl.generation.registry import build_generator
    from maporl.team import team_config

    run_cfg, ckpt, model_dir = checkpoint.resolve(str(source)) if source else (None, None, None)
    if model_dir:
        overrides = [*overrides, f"model.name_or_path={model_dir}"]
    cfg = team_config(load_config(config, list(overrides), base=run_cfg), run_cfg)
    team = checkpoint.load_team(cfg, ckpt) if ckpt else None
    return cfg, build_generator(cfg, team)


def evaluate(
    source: Source = None,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    problems: int | None = None,
    out: str | Path | None = None,
    quiet: bool = True,
    generator: Generator | None = None,
    cfg: Config | None = None,
    task=None,
) -> dict:
    """Discuss `eval.num_problems` problems of the task's eval split (`problems` overrides it) and return the team's
    metrics (`evaluation.team_metrics`: accuracy and majority per turn and agent, transitions, behaviours), with
    `seconds` and, where counted, `generated_tokens` and `tokens_per_s`. With `out`, the folder gets eval.json,
    transcripts.jsonl and the resolved config.yaml, as `maporl eval --out` writes them. `generator` with its `cfg`
    (from `load_team`) evaluates a team already loaded instead of `source`; `task`, the task `cfg` names, if loaded."""
    from maporl.evaluation import evaluate_team
    from maporl.tasks import get_task

    if generator is None or cfg is None:
        more = [f"eval.num_problems={problems}"] if problems is not None else []
        cfg, generator = load_team(source, config, [*overrides, *more])
    start = time.time()
    metrics, transcripts = evaluate_team(cfg, task or get_task(cfg.task.name), generator, quiet=quiet)
    seconds = time.time() - start
    metrics["seconds"] = round(seconds, 1)
    if tokens := generator.tokens_generated:
        metrics["generated_tokens"] = tokens
        metrics["tokens_per_s"] = round(tokens / max(seconds, 1e-3), 1)
    if out is not None:
        write_evaluation(Path(out), cfg, metrics, transcripts)
    return metrics


def write_evaluation(out: Path, cfg: Config, metrics: dict, transcripts: list[Transcript]) -> None:
    """An evaluation's folder: config.yaml, eval.json and transcripts.jsonl."""
    save_config(out, cfg)
    write_transcripts(out / "transcripts.jsonl", transcripts)
    (out / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")


def discuss(
    question: str,
    source: Source = None,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    answer: str = "",
    generator: Generator | None = None,
    cfg: Config | None = None,
) -> Transcript:
    """One discussion of `question` by the team `source` names (or by `generator` with its `cfg`, to ask many
    questions without loading the team again): every agent's answer at every turn. `answer` (the ground truth, if
    known) is kept in the transcript's problem for checking with the task's `is_correct`."""
    from maporl import discussion
    from maporl.tasks import get_task

    if generator is None or cfg is None:
        cfg, generator = load_team(source, config, overrides)
    [transcript] = discussion.run(
        [Problem("question", question, answer, cfg.task.name)],
        get_task(cfg.task.name),
        generator,
        cfg.discussion,
        cfg.seed,
    )
    return transcript


__all__ = ["Config", "discuss", "evaluate", "load_config", "load_team", "write_evaluation"]
