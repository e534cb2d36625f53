"""Behaviour metrics on hand-built correctness tables (expected counts worked out in the comments)."""

from __future__ import annotations

import pytest
import torch

from maporl.study.behaviour import BEHAVIOURS, behaviour_metrics


def table(*problems):
    """Per problem, per agent, correctness over turns -> (B, N, T) bool."""
    return torch.tensor(problems, dtype=torch.bool)


def test_three_agents_two_turns_by_hand():
    # Problem 0: A 0->1, B 1->1, C 1->1. A was wrong with both peers right: adoption (1 of 1).
    #   B right, kept right; its peers A (wrong -> right) and C (right): persuasion 1 event over 1 wrong peer. Same
    #   for C. A's peers' majority right: stubbornness 0 of 1.
    # Problem 1: A 0->0, B 0->1, C 0->0. Everyone wrong at turn 0, every majority wrong.
    #   B: self-correction (1 event); A and C: self-correction opportunities without the event.
    # Problem 2: A 1->0, B 0->0, C 0->0. A right with both peers wrong, then wrong: conformity error (1 of 1).
    #   B and C: wrong, peers' majority is neither (A right, the other wrong): no opportunity.
    correct = table(
        [[0, 1], [1, 1], [1, 1]],
        [[0, 0], [0, 1], [0, 0]],
        [[1, 0], [0, 0], [0, 0]],
    )
    m = behaviour_metrics(correct)
    assert set(m) == set(BEHAVIOURS)
    assert (m["adoption"]["count_per_turn"], m["adoption"]["rate_per_turn"]) == ([1], [1.0])
    assert (m["stubbornness"]["count_per_turn"], m["stubbornness"]["rate_per_turn"]) == ([1], [0.0])
    assert (m["self_correction"]["count_per_turn"], m["self_correction"]["rate_per_turn"]) == ([3], [1 / 3])
    assert (m["conformity_error"]["count_per_turn"], m["conformity_error"]["rate_per_turn"]) == ([1], [1.0])
    assert (m["persuasion"]["count_per_turn"], m["persuasion"]["rate_per_turn"]) == ([2], [1.0])
    # Per agent (A, B, C), turn 1
    assert m["self_correction"]["count_per_agent_turn"] == [[1], [1], [1]]
    assert m["self_correction"]["rate_per_agent_turn"] == [[0.0], [1.0], [0.0]]
    assert m["persuasion"]["count_per_agent_turn"] == [[0], [1], [1]]
    assert m["adoption"]["rate_per_agent_turn"] == [[1.0], [None], [None]]  # no opportunity: no rate


def test_two_agents_three_turns_per_turn_and_persuasion_counts_each_wrong_peer():
    # One peer each: "majority" is that peer. A: 1 1 1, B: 0 1 1.
    # Turn 1: B wrong with A right -> adoption (event). A kept right and B went wrong -> right: persuasion 1 of 1.
    #   A right with its peer wrong: a conformity-error opportunity, but A stayed right (0 of 1).
    # Turn 2: both right at turn 1: no opportunity for any behaviour but persuasion's condition (no wrong peer: 0).
    m = behaviour_metrics(table([[1, 1, 1], [0, 1, 1]]))
    assert m["adoption"]["count_per_turn"] == [1, 0] and m["adoption"]["rate_per_turn"] == [1.0, None]
    assert m["persuasion"]["count_per_turn"] == [1, 0] and m["persuasion"]["rate_per_turn"] == [1.0, None]
    assert m["conformity_error"]["count_per_turn"] == [1, 0] and m["conformity_error"]["rate_per_turn"] == [0.0, None]


def test_adoption_and_stubbornness_share_their_opportunities():
    torch.manual_seed(0)
    m = behaviour_metrics(torch.rand(50, 3, 3) > 0.5)
    assert m["adoption"]["count_per_turn"] == m["stubbornness"]["count_per_turn"]
    for a, s in zip(m["adoption"]["rate_per_turn"], m["stubbornness"]["rate_per_turn"], strict=True):
        assert a + s == pytest.approx(1.0)


def test_per_problem_counts_of_the_first_hand_case_and_the_eval_json_encoding():
    """The same three problems: per problem, (events, opportunities) summed over agents and turns; eval.json's
    `correct_per_problem` strings read back to the same table."""
    from maporl.study.behaviour import behaviour_per_problem, parse_correct

    correct = table(
        [[0, 1], [1, 1], [1, 1]],
        [[0, 0], [0, 1], [0, 0]],
        [[1, 0], [0, 0], [0, 0]],
    )
    per = behaviour_per_problem(correct)
    assert per["self_correction"] == ([0, 1, 0], [0, 3, 0])
    assert per["adoption"] == ([1, 0, 0], [1, 0, 0]) and per["stubbornness"] == ([0, 0, 0], [1, 0, 0])
    assert per["persuasion"] == ([2, 0, 0], [2, 0, 0]) and per["conformity_error"] == ([0, 0, 1], [0, 0, 1])
    assert torch.equal(parse_correct(["01 11 11", "00 01 00", "10 00 00"]), correct)
