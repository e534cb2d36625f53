"""Synthetic SFT data for the embedded base: solve problems (turn 0) and a *naive* discussion behaviour (turns > 0).

At turns > 0 the target is chosen at random, not by merit: re-solve from scratch, copy a random peer, keep the own
answer, or go with the majority. So untrained agents can do all of these but do not know *when* each helps, and the
team does not improve by discussing -- a testbed mirroring what MAPoRL observed of off-the-shelf LLMs. Learning when
to keep, copy or follow is what RL must teach.
"""

from __future__ import annotations

import random
from collections import Counter

from maporl.prompts import Messages, agent_label, discussion_prompt, first_turn_prompt, peers_of
from maporl.records import Problem
from maporl.tasks.arithmetic import ArithmeticTask

# Word problems get more weight than the single form they once had: many names, items and sentences to see through.
FAMILY_WEIGHTS = {"arith_chain": 0.5, "arith_long": 0.2, "arith_word": 0.3}
DISCUSSION_FRACTION = 0.5  # share of SFT examples in the discussion format
# Naive behaviour at turns > 0: mostly re-solve or copy a random peer, rarely keep or follow the majority.
BEHAVIOUR_WEIGHTS = {"resolve": 0.5, "copy": 0.3, "keep": 0.1, "majority": 0.1}
PEER_ACCURACY = 0.45  # simulated peers are right about as often as the base itself
NO_ANSWER_RATE = 0.05


def wrong_answer(rng: random.Random, answer: str) -> str:
    """A plausible wrong answer: off by a small amount, as an arithmetic slip would be."""
    return str(int(answer) + rng.choice([d for d in range(-10, 11) if d]))


def _simulated_answer(rng: random.Random, problem: Problem) -> str | None:
    if rng.random() < NO_ANSWER_RATE:
        return None
    return problem.answer if rng.random() < PEER_ACCURACY else wrong_answer(rng, problem.answer)


def naive_response(rng: random.Random, problem: Problem, own: str | None, peers: list[tuple[int, str | None]]) -> str:
    """The SFT target at a turn > 0, drawn from BEHAVIOUR_WEIGHTS among the behaviours that are possible here."""
    counts = Counter(a for a in [own, *(a for _, a in peers)] if a is not None)
    top = counts.most_common(2)
    has_majority = bool(top) and top[0][1] >= 2 and (len(top) == 1 or top[1][1] < top[0][1])
    options = {
        "resolve": True,
        "copy": any(a is not None for _, a in peers),
        "keep": own is not None,
        "majority": has_majority,
    }
    names = [k for k, ok in options.items() if ok]
    choice = rng.choices(names, weights=[BEHAVIOUR_WEIGHTS[k] for k in names])[0]
    if choice == "copy":
        j, a = rng.choice([(j, a) for j, a in peers if a is not None])
        return f"I agree with {agent_label(j)}. The answer is {a}."
    if choice == "keep":
        return f"I keep my answer. The answer is {own}."
    if choice == "majority":
        return f"I go with the majority. The answer is {top[0][0]}."
    assert problem.solution is not None
    return problem.solution


def sft_example(rng: random.Random, tasks: dict[str, ArithmeticTask], seed: int) -> tuple[Messages, str]:
    """One (prompt, target) pair from the training split."""
    family = rng.choices(list(FAMILY_WEIGHTS), weights=list(FAMILY_WEIGHTS.values()))[0]
    problem = tasks[family].sample(1, seed, "train")[0]
    assert problem.solution is not None
    if rng.random() >= DISCUSSION_FRACTION:
        return first_turn_prompt(problem.question), problem.solution
    num_agents = rng.choice((2, 3, 3, 4))
    me = rng.randrange(num_agents)
    own = _simulated_answer(rng, problem)
    peers = [(j, _simulated_answer(rng, problem)) for j in peers_of(me, num_agents, -1)]
    return discussion_prompt(problem.question, own, peers), naive_response(rng, problem, own, peers)
