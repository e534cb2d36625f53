"""Word problems in trained and unseen forms (tasks/word_forms.py): the two pools share nothing but the verbs, and
every problem stays at or above zero."""

from __future__ import annotations

import re

import pytest

from maporl.errors import UsageError
from maporl.tasks import get_task
from maporl.tasks import word_forms as wf
from maporl.tasks.arithmetic import ArithmeticTask

_STEP_RE = re.compile(r"(-?\d+)([+-])(\d+)=(-?\d+)\.")


def test_word_problems_never_go_below_zero_and_use_every_sign_pattern():
    for family in ("arith_word", "arith_word_unseen"):
        patterns = set()
        for p in get_task(family).sample(300, seed=4, split="train"):
            steps = _STEP_RE.findall(p.solution)
            assert all(int(result) >= 0 for *_, result in steps), p.question
            patterns.add(tuple(sign for _, sign, _, _ in steps))
        assert patterns == {("+", "-"), ("-", "+"), ("+", "+"), ("-", "-")}


def test_unseen_forms_share_nothing_with_trained_forms_but_the_verbs():
    trained = get_task("arith_word").sample(1000, seed=0, split="train")
    unseen = get_task("arith_word_unseen").sample(1000, seed=0, split="eval")
    assert set(wf.TRAINED_NAMES).isdisjoint(wf.UNSEEN_NAMES) and set(wf.TRAINED_ITEMS).isdisjoint(wf.UNSEEN_ITEMS)
    assert len(wf.TRAINED_NAMES) >= 1000 and len(wf.TRAINED_ITEMS) >= 300
    assert set(wf.TRAINED_COMBOS).isdisjoint(wf.UNSEEN_COMBOS)
    assert len(wf.TRAINED_COMBOS) + len(wf.UNSEEN_COMBOS) == len(wf.OPENERS) * len(wf.CHANGES) * len(wf.QUESTIONS)
    # No trained question holds an unseen name, item or sentence part (the parts' fixed words, before formatting).
    unseen_words = {w.lower() for w in wf.UNSEEN_NAMES + wf.UNSEEN_ITEMS}
    parts = [*wf.OPENERS, *wf.CHANGES, *wf.QUESTIONS, *wf.DISTRACTORS]
    new = [*wf.OPENERS[-2:], *wf.CHANGES[-2:], *wf.QUESTIONS[-2:], *wf.DISTRACTORS[-2:]]
    assert wf.NEW_PARTS == 2
    # each new part's longest fixed piece, where it is not also a piece of a trained part
    new_parts = [max(re.split(r"\{\w+\}", part), key=len) for part in new]
    new_parts = [p for p in new_parts if not any(p in q for q in parts if q not in new)]
    assert len(new_parts) == 8
    for p in trained:
        assert unseen_words.isdisjoint(re.findall(r"[a-z]+", p.question.lower())), p.question
        assert not any(part in p.question for part in new_parts), p.question
    # The unseen family uses only unseen names and items, and its sentences are all new combinations.
    for p in unseen:
        words = set(re.findall(r"[A-Za-z]+", p.question))
        assert words & set(wf.UNSEEN_NAMES) and words & set(wf.UNSEEN_ITEMS), p.question
        assert not words & set(wf.TRAINED_NAMES + wf.TRAINED_ITEMS), p.question
    assert len({p.question.split(".")[0] for p in unseen}) > 100


def test_word_problems_refuse_a_number_range_they_cannot_fill():
    with pytest.raises(UsageError, match="max_number >= 2"):
        ArithmeticTask("arith_word", max_number=1).sample(50, seed=0, split="train")
