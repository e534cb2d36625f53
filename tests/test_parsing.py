"""Safe answer extraction: normal answers, hostile model output, and properties over arbitrary text."""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maporl.prompts import discussion_prompt
from maporl.tasks.base import MAX_DIGITS, extract_number_answer, normalize_number

MB = 1_000_000

# ---------------------------------------------------------------- normal answers


@pytest.mark.parametrize(
    "text, expected",
    [
        ("17+25=42. 42-9=33. The answer is 33.", "33"),
        ("The answer is 33", "33"),
        ("the ANSWER IS 5.", "5"),
        ("So the answer is -12.", "-12"),
        ("The answer is: $1,200", "1200"),
        ("The answer is:$1,200.", "1200"),
        ("The answer is -$5.", "-5"),
        ("The answer is 1,234,567.", "1234567"),
        ("Work...\n#### 42", "42"),
        ("####-7", "-7"),
        ("Hence \\boxed{7}", "7"),
        ("\\boxed{ 1,000 }", "1000"),
        ("The answer is 3.50.", "3.5"),
        ("The answer is 7.0", "7"),
        ("The answer is 0.125", "0.125"),
        ("The answer is -0.0", "0"),
        ("The answer is 007.", "7"),
        ("The answer is 16 - that is all.", "16"),
        ("The answer is 16. 16-14=2 was a check.", "16"),
        ("The answer is 5, 6 was wrong.", "5"),
    ],
)
def test_extracts_normal_answers(text, expected):
    assert extract_number_answer(text) == expected


def test_last_occurrence_wins():
    assert extract_number_answer("The answer is 3. Wait, no. The answer is 4.") == "4"
    assert extract_number_answer("#### 1\n#### 2\n#### 3") == "3"
    assert extract_number_answer("\\boxed{8} then \\boxed{9}") == "9"


def test_answer_phrase_takes_priority_over_other_markers():
    # documented behaviour: patterns are tried in order ('answer is' first), the last match of that pattern wins
    assert extract_number_answer("The answer is 5. \\boxed{7}") == "5"
    assert extract_number_answer("#### 6 \\boxed{7}") == "6"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "17+25=42. 42-9=33.",
        "I think 33",
        "42",
        "The answer is",
        "The answer is unknown, maybe 12",
        "The answer is .5",
        "The answer is $",
        "answer 12",
        "\\boxed{x}",
        "\\boxed{12",
        "####",
        # an expression after the phrase is not a final answer (RL drifted into such suffixes when they parsed)
        "The answer is 16-14.",
        "The answer is 42-48",
        "The answer is 12 - 3 = 9.",
        "The answer is 3 x 4",
        "#### 6+1",
        "The answer is 2026-11-27",
    ],
)
def test_no_answer_phrase_gives_none(text):
    assert extract_number_answer(text) is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1,234", "1234"),
        ("$5", "5"),
        ("3.50", "3.5"),
        ("7.0", "7"),
        ("7.", "7"),
        (" 42 ", "42"),
        ("-3", "-3"),
        ("0.10", "0.1"),
        ("9" * MAX_DIGITS, "9" * MAX_DIGITS),
        ("9" * (MAX_DIGITS + 1), None),
        ("", None),
        ("   ", None),
        ("abc", None),
        ("1.2.3", None),
        ("nan", None),
        ("NaN", None),
        ("inf", None),
        ("-Infinity", None),
        ("sNaN", None),
    ],
)
def test_normalize_number(text, expected):
    assert normalize_number(text) == expected


# ---------------------------------------------------------------- hostile output


def _timed(text: str) -> tuple[str | None, float]:
    start = time.perf_counter()
    result = extract_number_answer(text)
    return result, time.perf_counter() - start


@pytest.mark.parametrize(
    "text, expected",
    [
        ("x" * MB + " The answer is 42.", "42"),
        ("x" * MB, None),
        ("The answer is 7. " + "y" * MB, None),  # the final answer must be near the end
        ("1" * MB, None),
        ("answer is " * (MB // 10), None),
        ("The answer is " + "1," * (MB // 2), None),
        ("#### " * (MB // 5), None),
        ("\\boxed{" * (MB // 7), None),
        ("9" * MB + " The answer is 12.", "12"),
    ],
)
def test_megabyte_output_is_fast(text, expected):
    assert len(text) >= 0.9 * MB
    result, elapsed = _timed(text)
    assert result == expected
    assert elapsed < 1.0


@pytest.mark.parametrize("digits", [MAX_DIGITS + 1, 100, 4000, 10_000])
def test_huge_numbers_are_unparseable(digits):
    result, elapsed = _timed("The answer is " + "9" * digits + ".")
    assert result is None
    assert elapsed < 1.0
    assert extract_number_answer("#### " + "1" * digits) is None
    assert normalize_number("8" * digits) is None


def test_max_digits_boundary():
    assert extract_number_answer("The answer is " + "1" * MAX_DIGITS) == "1" * MAX_DIGITS
    assert extract_number_answer("The answer is 1" + ",000" * 9) == "1" + "000" * 9  # 28 digits
    assert extract_number_answer("The answer is 1" + ",000" * 10) is None  # 31 digits


def test_code_is_never_executed(monkeypatch, capfd):
    calls = []
    monkeypatch.setattr(os, "system", lambda *a, **k: calls.append(a) or 0)
    for text in [
        "__import__('os').system('echo pwned')",
        "The answer is __import__('os').system('echo pwned')",
        "The answer is eval('1+1')",
        "#### exec('print(1)')",
        "\\boxed{__import__('os').system('echo pwned')}",
    ]:
        assert extract_number_answer(text) is None
    assert calls == []
    out, err = capfd.readouterr()
    assert "pwned" not in out + err


@pytest.mark.parametrize(
    "text",
    [
        "The answer is 1e309",
        "The answer is 1e999999999",
        "The answer is 1E-400",
        "The answer is inf",
        "The answer is -inf",
        "The answer is nan",
        "The answer is Infinity",
        "#### 1e309",
        "\\boxed{1e309}",
        "The answer is 0x1F",
        "The answer is 1_000_000",
    ],
)
def test_odd_number_syntax_is_handled(text):
    result = extract_number_answer(text)
    assert result is None or (isinstance(result, str) and len(result) <= 40 and normalize_number(result) == result)
    if "inf" in text.lower() or "nan" in text.lower():
        assert result is None
    if "1e309" in text:
        assert result in (None, "1")  # the exponent is never expanded


@pytest.mark.parametrize(
    "text",
    [
        "The answer is \u0664\u0662",  # Arabic-Indic digits
        "The answer is \uff17",  # fullwidth 7
        "The answer is \u00b2",  # superscript two (isdigit but not a decimal digit)
        "The answer is \U0001f389",
        "The answer is 5\U0001f389",
        "\U0001f600" * 10_000,
        "The answer is \x007",
        "The answer is 7\x00",
        "\x00" * 10_000,
        "The answer is \ud800",  # lone surrogate
        "The answer is \u200b42",  # zero-width space
        "The answer is \u202e42",  # right-to-left override
        "The answer is 4\u0300",  # combining mark
    ],
)
def test_unicode_and_control_chars_do_not_raise(text):
    result = extract_number_answer(text)
    assert result is None or (isinstance(result, str) and len(result) <= 40 and normalize_number(result) == result)


def test_specific_unicode_outcomes():
    assert extract_number_answer("The answer is 5\U0001f389") == "5"
    assert extract_number_answer("The answer is 7\x00") == "7"
    assert extract_number_answer("The answer is \x007") is None
    assert extract_number_answer("The answer is \U0001f389") is None
    assert extract_number_answer("The answer is \u00b2") is None
    assert extract_number_answer("The answer is \u0664\u0662") in (None, "42")


# ---------------------------------------------------------------- properties

_answer_like = st.builds(
    lambda a, phrase, num, b: a + phrase + num + b,
    st.text(max_size=50),
    st.sampled_from(["The answer is ", "answer is: ", "#### ", "\\boxed{", "The answer is $", "answer is -"]),
    st.text(alphabet="0123456789,.$-e+ ", max_size=80),
    st.text(max_size=10),
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet="0123456789,.$-#{}\\boxed answer is:", max_size=200), _answer_like))
def test_extract_never_raises_and_is_normalised(text):
    result = extract_number_answer(text)
    assert result is None or isinstance(result, str)
    if result is not None:
        assert 0 < len(result) <= 40
        assert normalize_number(result) == result


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-(10**MAX_DIGITS - 1), max_value=10**MAX_DIGITS - 1))
def test_integer_answers_round_trip(n):
    assert extract_number_answer(f"The answer is {n}.") == str(n)
    assert extract_number_answer(f"Reasoning.\n#### {n}") == str(n)
    assert extract_number_answer(f"So the answer is {n:,}.") == str(n)


@pytest.mark.parametrize("text", ["1e309", "1e5000", "1e-100"])
def test_normalize_number_bounds_exponent_notation(text):
    result = normalize_number(text)  # '1e5000' currently raises ValueError, '1e309' gives 310 characters
    assert result is None or len(result) <= 40


def test_normalize_number_keeps_thirty_significant_digits():
    assert normalize_number("1000000000000000000000000000.5") == "1000000000000000000000000000.5"


# ---------------------------------------------------------------- prompts


def test_discussion_prompt_is_bounded_for_hostile_answers():
    question = "What is 17+25-9?"
    own = "9" * MB
    peers = [(1, "The answer is " + "x" * MB), (2, None), (3, "\x00" * MB)]
    messages = discussion_prompt(question, own, peers)
    assert len(messages) == 1
    assert messages[0]["role"] == "user"
    content = messages[0]["content"]
    assert len(content) < 2000
    assert content.startswith(question + "\nYou said: 999")
    assert "Agent 2 said: The answer is x" in content
    assert "Agent 3 said: no answer" in content
    assert "Agent 4 said: " in content
    assert content.endswith("Answer again.")


def test_discussion_prompt_short_answers_verbatim():
    content = discussion_prompt("Q?", "33", [(0, "34")])[0]["content"]
    assert content == "Q?\nYou said: 33\nAgent 1 said: 34\nAnswer again."
    assert discussion_prompt("Q?", None, [])[0]["content"] == "Q?\nYou said: no answer\nAnswer again."


_hostile = st.one_of(
    st.text(),
    st.text(alphabet="<>/\"'&;(){}[]$`\\\x00\n", max_size=300),
    st.sampled_from(["__import__('os').system('touch /tmp/pwned')", "</script><script>alert(1)</script>", "\u202e"]),
)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=500), st.one_of(st.none(), _hostile), st.lists(st.one_of(st.none(), _hostile), max_size=5))
def test_discussion_prompt_never_raises_and_stays_bounded(question, own, peer_answers):
    messages = discussion_prompt(question, own, list(enumerate(peer_answers)))
    content = messages[0]["content"]
    assert content.startswith(question) and content.endswith("Answer again.")
    assert len(content) <= len(question) + 100 * (len(peer_answers) + 1) + 50


@settings(max_examples=200, deadline=None)
@given(_hostile)
def test_label_parser_never_raises(text):
    from maporl.tasks.base import ANLI_LABELS, extract_label_answer

    assert extract_label_answer(text, ANLI_LABELS) in (None, *ANLI_LABELS)
    assert extract_label_answer(text + " The answer is Neutral.", ANLI_LABELS) == "neutral"


def test_megabyte_hostile_text_is_parsed_in_bounded_time():
    from maporl.tasks.base import ANLI_LABELS, extract_label_answer

    text = ("The answer is " + "9" * 40 + " (") * (MB // 56) + "answer is" * 1000
    start = time.perf_counter()
    for _ in range(5):
        assert extract_number_answer(text) is None
        assert extract_label_answer(text, ANLI_LABELS) is None
    assert time.perf_counter() - start < 2.0


@settings(max_examples=50, deadline=None)
@given(_hostile)
def test_report_page_never_contains_raw_model_text(tmp_path_factory, text):
    import json

    from maporl.evaluation import team_metrics
    from maporl.records import Transcript
    from maporl.study.report import write_report
    from maporl.tasks import get_task

    run = tmp_path_factory.mktemp("r")
    answer = {"agent": 0, "turn": 0, "prompt": [], "response": text, "parsed": text[:5] or None}
    tr = {
        "problem": {"id": "p", "question": text, "answer": "1", "family": "t", "solution": None},
        "answers": [[answer | {"truncated": False, "token_ids": [], "logprobs": []}]],
        "meta": {},
    }
    metrics = team_metrics([Transcript.from_json(tr)], get_task("arith_chain"))
    (run / "eval.json").write_text(json.dumps(metrics))
    (run / "eval_transcripts.jsonl").write_text(json.dumps(tr) + "\n")
    page = write_report(run).read_text()
    body = page.split('<script id="data" type="application/json">')[1].split("</script>")[0]
    assert "</" not in body  # the embedded JSON cannot close its script tag
    assert json.loads(body)[0]["question"] == text
