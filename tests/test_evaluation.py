"""Team metrics on hand-built transcripts."""

from __future__ import annotations

import pytest

from maporl.evaluation import format_table, majority, team_metrics
from maporl.records import Answer, Problem, Transcript
from maporl.tasks import get_task

TASK = get_task("arith_chain")


def transcript(answer: str, parsed_by_turn: list[list[str | None]]) -> Transcript:
    problem = Problem("p", "q", answer, "t")
    turns = tuple(
        tuple(Answer(agent=i, turn=t, prompt=(), response="", parsed=p) for i, p in enumerate(row))
        for t, row in enumerate(parsed_by_turn)
    )
    return Transcript(problem, turns)


def test_majority_ties_go_to_lowest_agent_and_none_is_ignored():
    assert majority(["1", "2", "2"]) == "2"
    assert majority(["1", "2", None]) == "1"
    assert majority([None, "5", "4", "4", "5"]) == "5"
    assert majority([None, None]) is None


def test_team_metrics_by_hand():
    # Problem A (answer 3): turn 0 [3, 1, 2] -> turn 1 [3, 3, 2]; problem B (answer 5): [5, 5, None] -> [4, 5, 5].
    trs = [transcript("3", [["3", "1", "2"], ["3", "3", "2"]]), transcript("5", [["5", "5", None], ["4", "5", "5"]])]
    m = team_metrics(trs, TASK)
    assert m["acc_per_agent_turn"] == [[1.0, 0.5], [0.5, 1.0], [0.0, 0.5]]
    assert m["acc_per_turn"] == pytest.approx([0.5, 2 / 3])
    assert m["majority_per_turn"] == [1.0, 1.0]  # A turn 0: 3-1-2 tie -> agent 1's "3"
    assert m["wrong_to_right"] == pytest.approx([2 / 6])  # A agent 2 (1->3), B agent 3 (None->5)
    assert m["right_to_wrong"] == pytest.approx([1 / 6])  # B agent 1 (5->4)
    assert m["acc_per_turn"][1] - m["acc_per_turn"][0] == pytest.approx(
        m["wrong_to_right"][0] - m["right_to_wrong"][0]
    )
    assert m["consensus_per_turn"] == [0.0, 0.0]
    assert m["any_correct_per_turn"] == [1.0, 1.0]
    assert m["parse_rate"] == pytest.approx(11 / 12)
    assert m["num_problems"] == 2
    assert m["correct_per_problem"] == ["11 01 00", "10 11 01"]  # per agent: right (1) / wrong (0) per turn
    assert "majority vote" in format_table(m)


def test_consensus_needs_everyone_to_agree_on_a_parsed_answer():
    trs = [transcript("3", [["3", "3"]]), transcript("3", [[None, None]]), transcript("3", [["4", "4"]])]
    assert team_metrics(trs, TASK)["consensus_per_turn"] == [pytest.approx(2 / 3)]


def test_any_correct_counts_problems_where_at_least_one_agent_is_right():
    # A: one of three right at turn 0, nobody at turn 1; B: nobody, then two; C: nobody at either turn.
    trs = [
        transcript("3", [["1", "3", None], ["1", "1", "1"]]),
        transcript("5", [["4", "4", "4"], ["5", "5", "4"]]),
        transcript("7", [[None, None, None], ["6", "6", "6"]]),
    ]
    m = team_metrics(trs, TASK)
    assert m["any_correct_per_turn"] == [pytest.approx(1 / 3), pytest.approx(1 / 3)]
    assert m["acc_per_turn"] == [pytest.approx(1 / 9), pytest.approx(2 / 9)]
    assert "any agent right" in format_table(m)
