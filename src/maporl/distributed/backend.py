"""Where a training step's work runs: in this process, or as Ray actors wrapping the same objects (`backend`).

The trainer asks `backends_for` once for the generator, a `discuss(problems, step)` call, the verifier, the
ground-truth labeler, the learner's updaters and what recovers a lost actor; the loop is the same for both.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from maporl import discussion
from maporl.config import Config
from maporl.errors import UsageError, WorkerLost
from maporl.generation import Generator
from maporl.generation.registry import build_generator
from maporl.learner import Updaters
from maporl.verifiers import build_verifier
from maporl.verifiers.label import LabelVerifier


@dataclass(frozen=True)
class Backends:
    generator: Generator
    discuss: Callable  # (problems, step) -> the step's transcripts
    verifier: object  # .score(transcripts) -> (B, N, T) scores
    labeler: LabelVerifier  # ground truth
    updaters: Updaters | None  # None: the learner's own, in this process
    recovery: Callable  # (learner, team) -> what restarts lost actors and rolls a step back (nothing in-process)
    start: Callable | None = None  # (problems, step) -> a call that waits for their transcripts (Ray only)


def backends_for(cfg: Config, team, task, policy, agents: list[int]) -> Backends:
    """In this process, or as Ray actors (rollout workers, a verifier, one learner per adapter)."""
    labeler = LabelVerifier(task)
    if cfg.backend == "ray":
        from maporl.distributed.learners import RayRecovery, ray_backends

        pool, verifier, updaters = ray_backends(cfg, policy, agents)

        def discuss_on_workers(problems, step: int):
            return pool.discuss(problems, cfg.task.name, cfg.discussion, cfg.seed, step)

        def recovery(learner, team):
            return RayRecovery(pool, verifier, learner, team)

        def start(problems, step: int):
            calls = pool.start(problems, cfg.task.name, cfg.discussion, cfg.seed, step)
            return lambda: pool.finish(calls)

        return Backends(pool, discuss_on_workers, verifier, labeler, updaters, recovery, start)
    verifier = labeler if cfg.verifier.kind == "label" else build_verifier(cfg, task)
    generator = build_generator(cfg, team)
    return Backends(generator, discussing_here(cfg, task, generator), verifier, labeler, None, NoRecovery)


class NoRecovery:
    """In one process nothing is lost without losing the run: the step is never redone."""

    def __init__(self, learner, team):
        pass

    def begin(self) -> None:
        pass

    def recover(self) -> None:
        pass


def redo_once(rollout_and_update: Callable, step: int, recover: Callable, save: Callable, run_dir: Path):
    """`rollout_and_update(step)`; when a Ray actor is lost in it, restart it, roll the step back and redo it once. A
    second loss stops the run with a checkpoint of the steps done, from which --resume continues exactly."""
    try:
        return rollout_and_update(step)
    except WorkerLost as lost:
        print(f"maporl: warning: {lost} in step {step + 1}; restarting it and redoing the step", file=sys.stderr)
        recover()
    try:
        return rollout_and_update(step)
    except WorkerLost as lost:
        recover()
        ckpt = save(step)
        raise UsageError(
            f"{lost} again in step {step + 1}; stopped with checkpoint {ckpt}: "
            f"continue with `maporl train --resume {run_dir}`"
        ) from None


def discussing_here(cfg: Config, task, generator: Generator) -> Callable:
    """`discuss(problems, step)` in this process, with `generator`."""

    def discuss(problems, step: int):
        return discussion.run(problems, task, generator, cfg.discussion, cfg.seed, step)

    return discuss
