"""Protocol tests with a scripted fake generator: exactly who sees what at which turn."""

from __future__ import annotations

from maporl import discussion
from maporl.config import DiscussionConfig
from maporl.generation import Completion, GenRequest
from maporl.prompts import DISCUSS_INSTRUCTION
from maporl.records import Problem, Transcript
from maporl.tasks import get_task

TASK = get_task("arith_chain")
PROBLEMS = [Problem("p0", "What is 1+2-0?", "3", "t"), Problem("p1", "What is 5+5-1?", "9", "t")]


class ScriptedGenerator:
    """Agent i at turn t answers 10*t + i + 100*problem; records every request and call."""

    weights_version = 7

    def __init__(self):
        self.calls: list[list[GenRequest]] = []

    def generate(self, requests):
        self.calls.append(list(requests))
        out = []
        for r in requests:
            text = r.messages[-1]["content"]
            problem = 0 if text.startswith("What is 1+2-0?") else 1
            turn = len(self.calls) - 1
            out.append(Completion(f"The answer is {100 * problem + 10 * turn + r.agent}."))
        return out


def run(num_agents=3, turns=3, peers_shown=-1, seed=0):
    gen = ScriptedGenerator()
    cfg = DiscussionConfig(num_agents=num_agents, turns=turns, peers_shown=peers_shown)
    return discussion.run(PROBLEMS, TASK, gen, cfg, seed=seed), gen


def test_one_generate_call_per_turn_with_every_agent_and_problem():
    transcripts, gen = run()
    assert len(gen.calls) == 3
    for call in gen.calls:
        assert [(r.agent) for r in call] == [0, 1, 2, 0, 1, 2]
    assert [tr.num_turns for tr in transcripts] == [3, 3]
    assert transcripts[1].answers[2][1].parsed == "121"
    assert [tr.meta["weights_version"] for tr in transcripts] == [7, 7]  # the generator's weights, recorded


def test_turn_zero_sees_only_the_question():
    _, gen = run()
    for r in gen.calls[0]:
        assert r.messages == ({"role": "user", "content": r.messages[0]["content"]},)
        assert r.messages[0]["content"] in {p.question for p in PROBLEMS}


def test_later_turns_see_own_and_all_peers_previous_answers():
    _, gen = run()
    # turn 2, problem 1, agent 0: own answer at turn 1 is 110; peers (agents 2, 3 in text) said 111 and 112.
    content = gen.calls[2][3].messages[0]["content"]
    assert content.splitlines() == [
        "What is 5+5-1?",
        "You said: 110",
        "Agent 2 said: 111",
        "Agent 3 said: 112",
        DISCUSS_INSTRUCTION,
    ]
    # agent 2 (Agent 3 in text) sees Agent 1 and Agent 2, never itself.
    content = gen.calls[1][2].messages[0]["content"]
    assert content.splitlines()[1:4] == ["You said: 2", "Agent 1 said: 0", "Agent 2 said: 1"]


def test_peers_shown_limits_the_view():
    _, gen = run(num_agents=4, peers_shown=1)
    lines = gen.calls[1][3].messages[0]["content"].splitlines()
    assert lines[1:3] == ["You said: 3", "Agent 1 said: 0"]
    assert not any(line.startswith("Agent 3") for line in lines)


def test_unparseable_previous_answer_is_shown_as_no_answer():
    class Mumbler(ScriptedGenerator):
        def generate(self, requests):
            super().generate(requests)
            return [Completion("I am not sure" if r.agent == 1 else "The answer is 4.") for r in requests]

    gen = Mumbler()
    transcripts = discussion.run(PROBLEMS[:1], TASK, gen, DiscussionConfig(num_agents=2, turns=2), seed=0)
    assert transcripts[0].answers[0][1].parsed is None
    assert "Agent 2 said: no answer" in gen.calls[1][0].messages[0]["content"]


def test_single_agent_single_turn():
    transcripts, gen = run(num_agents=1, turns=1)
    assert len(gen.calls) == 1 and len(gen.calls[0]) == 2
    assert transcripts[0].answers[0][0].parsed == "0"


def test_seeds_depend_on_seed_step_problem_agent_turn_only():
    _, a = run(seed=7)
    _, b = run(seed=7)
    _, c = run(seed=8)
    seeds = lambda g: [r.seed for call in g.calls for r in call]  # noqa: E731
    assert seeds(a) == seeds(b)
    assert seeds(a) != seeds(c)
    assert len(set(seeds(a))) == len(seeds(a))
    assert discussion.sample_seed(0, 1, 2, 3, 4) != discussion.sample_seed(0, 1, 2, 4, 3)


def test_chunked_run_uses_the_same_seeds_as_one_run():
    gen_all, gen_parts = ScriptedGenerator(), ScriptedGenerator()
    cfg = DiscussionConfig(num_agents=2, turns=1)
    discussion.run(PROBLEMS, TASK, gen_all, cfg, seed=3)
    discussion.run(PROBLEMS[1:], TASK, gen_parts, cfg, seed=3, first_index=1)
    assert [r.seed for r in gen_all.calls[0][2:]] == [r.seed for r in gen_parts.calls[0]]


def test_transcript_json_round_trip():
    transcripts, _ = run()
    assert Transcript.from_json(transcripts[0].to_json()) == transcripts[0]


def test_base_sft_data_comes_from_the_train_split_only():
    import random

    from maporl.base.data import sft_example
    from maporl.tasks import split_of
    from maporl.tasks.arithmetic import ArithmeticTask

    rng = random.Random(0)
    tasks = {n: ArithmeticTask(n) for n in ("arith_chain", "arith_long", "arith_word")}
    for i in range(300):
        prompt, target = sft_example(rng, tasks, i)
        question = prompt[0]["content"].split("\n")[0]
        assert split_of(question) == "train"
        assert "The answer is" in target


def test_an_answer_cut_off_at_max_new_tokens_has_no_final_answer():
    class CutGenerator(ScriptedGenerator):
        def generate(self, requests):  # agent 0 is always cut off, even though its text holds an answer
            done = super().generate(requests)
            return [Completion(c.text, r.agent == 0) for c, r in zip(done, requests, strict=True)]

    gen = CutGenerator()
    transcripts = discussion.run(PROBLEMS, TASK, gen, DiscussionConfig(num_agents=2, turns=2), seed=0)
    first = transcripts[0].answers[0]
    assert (first[0].parsed, first[0].truncated, first[1].parsed, first[1].truncated) == (None, True, "1", False)
    assert first[0].response == "The answer is 0."
    # at turn 1 agent 1 sees agent 0's answer as missing
    assert "The answer is 0" not in gen.calls[1][1].messages[0]["content"]
