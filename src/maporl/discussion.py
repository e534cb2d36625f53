"""The multi-agent discussion: N agents x T turns, text in, transcripts out (no torch here).

Turn 0: every agent answers the question alone. Turn t > 0: every agent sees the question, its own answer at t-1
and the answers of its shown peers at t-1, and answers again. All agents x problems of a turn go to the generator in
one call, which batches them (mixed adapters in one batch).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from maporl import faults
from maporl.config import DiscussionConfig
from maporl.generation import Generator, GenRequest
from maporl.prompts import discussion_prompt, first_turn_prompt, peers_of
from maporl.records import Answer, Problem, Transcript
from maporl.tasks import Task


def sample_seed(seed: int, step: int, problem: int, agent: int, turn: int) -> int:
    """A row's sampling seed, derived from (seed, step, problem, agent, turn) only: reruns give the same text."""
    digest = hashlib.sha256(f"{seed}/{step}/{problem}/{agent}/{turn}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def run(
    problems: Sequence[Problem],
    task: Task,
    generator: Generator,
    cfg: DiscussionConfig,
    seed: int,
    step: int = 0,
    first_index: int = 0,
) -> list[Transcript]:
    """Discuss every problem; returns one Transcript per problem with answers[turn][agent].

    `first_index` is the index of problems[0] in the whole batch, so chunked runs draw the same seeds as one big run.
    """
    n = cfg.num_agents
    history: list[list[tuple[Answer, ...]]] = [[] for _ in problems]
    for t in range(cfg.turns):
        requests = []
        for b, problem in enumerate(problems):
            question = task.render_question(problem)
            for i in range(n):
                if t == 0:
                    messages = first_turn_prompt(question)
                else:
                    prev = history[b][t - 1]
                    shown = [(j, prev[j].parsed) for j in peers_of(i, n, cfg.peers_shown)]
                    messages = discussion_prompt(question, prev[i].parsed, shown)
                requests.append(GenRequest(messages, i, sample_seed(seed, step, first_index + b, i, t)))
        completions = generator.generate(requests)
        for b in range(len(problems)):
            turn = []
            for i in range(n):
                r, c = requests[b * n + i], completions[b * n + i]
                # An answer cut off at max_new_tokens has no final answer, whatever it contains (as TRL's
                # mask_truncated_completions and DAPO's overlong filtering): otherwise RL drifts into answers
                # that repeat "The answer is N." until the limit (seen in single-agent GRPO after ~1,000 steps).
                parsed = None if c.truncated else task.extract_answer(c.text)
                turn.append(Answer(i, t, r.messages, c.text, parsed, c.truncated, c.token_ids, c.logprobs))
            history[b].append(tuple(turn))
        faults.point("generation")
    meta = {"weights_version": generator.weights_version}  # which weights answered: a stale worker shows here
    return [Transcript(p, tuple(h), dict(meta)) for p, h in zip(problems, history, strict=True)]
