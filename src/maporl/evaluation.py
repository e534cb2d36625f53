"""Team metrics of a set of discussions: accuracy per agent x turn, majority vote, transitions, consensus, how
often at least one agent is right (the most a discussion can recover), the behaviours of behaviour.py, and each
problem's accuracy per turn (for paired intervals between teams evaluated on the same problems, stats.py).

Transition rates are fractions of all (problem, agent) pairs, so acc[t] - acc[t-1] == wrong_to_right[t-1] -
right_to_wrong[t-1] exactly.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from maporl.errors import UsageError
from maporl.records import Transcript, answer_grid
from maporl.study.behaviour import behaviour_metrics
from maporl.tasks import Task

# What `team_metrics` returns, and so what an eval.json holds (commands add timings beside them).
EVAL_KEYS = ("num_problems", "num_agents", "num_turns", "acc_per_turn", "majority_per_turn", "acc_per_agent_turn",
             "wrong_to_right", "right_to_wrong", "consensus_per_turn", "any_correct_per_turn", "parse_rate",
             "behaviour", "problem_ids", "acc_per_problem_turn", "correct_per_problem")  # fmt: skip


def majority(answers: Sequence[str | None]) -> str | None:
    """Most common parsed answer; ties go to the answer given by the lowest-numbered agent; None if nobody answered."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


def team_metrics(transcripts: Sequence[Transcript], task: Task) -> dict:
    """Metrics over problems; keys documented in docs/metrics.md."""
    if not transcripts:
        raise ValueError("no transcripts to evaluate")
    n, turns, b = transcripts[0].num_agents, transcripts[0].num_turns, len(transcripts)
    # (B, N, T) correctness; float64 so that every rate below is exactly k / count, as plain fractions would be.
    c = answer_grid(transcripts, lambda pairs: [task.is_correct(a.parsed, tr.problem) for tr, a in pairs]).double()
    acc_agent_turn = c.mean(0).tolist()
    acc_turn = [sum(acc_agent_turn[i][t] for i in range(n)) / n for t in range(turns)]
    maj = [
        sum(task.is_correct(majority([a.parsed for a in tr.answers[t]]), tr.problem) for tr in transcripts) / b
        for t in range(turns)
    ]
    consensus = [
        sum(len({a.parsed for a in tr.answers[t]}) == 1 and tr.answers[t][0].parsed is not None for tr in transcripts)
        / b
        for t in range(turns)
    ]
    # Discussion can only spread a right answer some agent already has: this is its ceiling (pass@N at turn 0).
    any_correct = c.amax(1).mean(0).tolist()
    pairs = b * n
    w2r = ((1 - c[:, :, :-1]) * c[:, :, 1:]).sum((0, 1)).div(pairs).tolist()
    r2w = (c[:, :, :-1] * (1 - c[:, :, 1:])).sum((0, 1)).div(pairs).tolist()
    parsed = sum(a.parsed is not None for tr in transcripts for turn in tr.answers for a in turn)
    return {
        "num_problems": b,
        "num_agents": n,
        "num_turns": turns,
        "acc_per_turn": acc_turn,
        "majority_per_turn": maj,
        "acc_per_agent_turn": acc_agent_turn,
        "wrong_to_right": w2r,
        "right_to_wrong": r2w,
        "consensus_per_turn": consensus,
        "any_correct_per_turn": any_correct,
        "parse_rate": parsed / (pairs * turns),
        "behaviour": behaviour_metrics(c),
        "problem_ids": [tr.problem.id for tr in transcripts],
        "acc_per_problem_turn": c.mean(1).tolist(),
        # Each problem's right (1) / wrong (0) per agent and turn, agents separated by spaces ("011 001 111"): the
        # behaviours per problem, for paired intervals between teams (claims.py), in a few bytes per problem.
        "correct_per_problem": [" ".join("".join(str(int(x)) for x in agent) for agent in p) for p in c.tolist()],
    }


def read_json(path: Path, keys: Iterable[str], remedy: str) -> dict:
    """A JSON object maporl wrote to `path`, with every key of its current format in `keys`; anything else is
    refused in one line naming the file, then `remedy` (how to write it again)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{path} cannot be read ({e}); {remedy}") from None
    check_format(path, data, keys, remedy)
    return data


def check_format(path: Path, data: object, keys: Iterable[str], remedy: str, where: str = "") -> None:
    """Refuse `data` (read from `path`; `where`: its place in the file) unless it is an object with every key."""
    missing = [f"{where}{k}" for k in keys if not isinstance(data, dict) or k not in data]
    if missing:
        raise UsageError(
            f"{path} is in a format this version of maporl does not read (no {', '.join(missing[:3])}); {remedy}"
        )


def read_eval(path: Path) -> dict:
    """An eval.json as `team_metrics` wrote it (`maporl eval`, a training run's final evaluation, reproduce)."""
    return read_json(path, EVAL_KEYS, "evaluate the team again to write it")


def _percent(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.1f}%"


def table_rows(m: dict) -> list[tuple[str, list[str]]]:
    """The rows of a metrics table (one cell per turn, "" where a transition or behaviour has no earlier turn),
    shared by the text table below and the report's HTML table."""
    rows = [(f"agent {i + 1}", m["acc_per_agent_turn"][i]) for i in range(m["num_agents"])]
    rows += [
        ("team mean", m["acc_per_turn"]),
        ("majority vote", m["majority_per_turn"]),
        ("consensus", m["consensus_per_turn"]),
        ("any agent right", m["any_correct_per_turn"]),
    ]
    rows += [("wrong→right", [None, *m["wrong_to_right"]]), ("right→wrong", [None, *m["right_to_wrong"]])]
    cells = [(name, [_percent(v) for v in vs]) for name, vs in rows]
    for name, b in m["behaviour"].items():
        turns = [f"{_percent(r) or '–'} ({n})" for r, n in zip(b["rate_per_turn"], b["count_per_turn"], strict=True)]
        cells.append((name.replace("_", " "), ["", *turns]))
    return cells


def format_table(m: dict) -> str:
    """A plain-text table: one row per agent and the team rows, one column per turn; behaviours as rate (count)."""
    rows = table_rows(m)
    width = max(11, *(len(c) + 2 for _, cs in rows for c in cs))
    head = f"{'':<18}" + "".join(f"{'turn ' + str(t):>{width}}" for t in range(m["num_turns"]))
    lines = [head] + [f"{name.replace('→', '->'):<18}" + "".join(f"{c:>{width}}" for c in cs) for name, cs in rows]
    lines.append(f"problems: {m['num_problems']}, answers parsed: {100 * m['parse_rate']:.1f}%")
    lines.append("behaviours: rate (opportunities), turns >= 1; definitions in docs/metrics.md")
    return "\n".join(lines)


def evaluate_team(cfg, task: Task, generator, quiet: bool = False, chunk: int = 128) -> tuple[dict, list[Transcript]]:
    """Discuss cfg.eval.num_problems eval-split problems (chosen by cfg.eval.seed) and compute team metrics."""
    from maporl import discussion
    from maporl.utils import progress

    problems = task.sample(cfg.eval.num_problems, cfg.eval.seed, "eval")
    transcripts: list[Transcript] = []
    with progress(len(problems), "eval", quiet=quiet) as bar:
        for start in range(0, len(problems), chunk):
            part = problems[start : start + chunk]
            transcripts += discussion.run(part, task, generator, cfg.discussion, cfg.eval.seed, first_index=start)
            bar.advance(f"acc(last turn) {team_metrics(transcripts, task)['acc_per_turn'][-1]:.1%}", n=len(part))
    return team_metrics(transcripts, task), transcripts
