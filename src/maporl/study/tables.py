"""The tables of `maporl reproduce`: per-method summaries over seeds, and the results as blocks (accuracy per turn,
the claims with their paired intervals, the incentive ablation, behaviours, incentives during training and each seed's
run) that results.md and the report's HTML both render (`document.py`)."""

from __future__ import annotations

import statistics
from pathlib import Path

from maporl.evaluation import check_format, read_json
from maporl.study.arms import ARMS
from maporl.study.claims import format_share
from maporl.study.document import Block, Heading, Paragraph, Table, to_html, to_markdown

SUMMARIZED = ("acc_per_turn", "majority_per_turn", "wrong_to_right", "right_to_wrong", "any_correct_per_turn")
# What a method's summary of one task holds in results.json (`summarize`).
SUMMARY_KEYS = ("behaviour", *(f"{k.replace('_per_turn', '')}_{s}" for k in SUMMARIZED for s in ("mean", "std")))
RESULTS_KEYS = ("train_task", "transfer_task", "seeds", "budget_min", "eval_problems", "minutes", "methods", "claims",
                "incentive_ablation")  # fmt: skip


def summarize(per_seed: list[dict]) -> dict:
    """Mean and std over seeds of every per-turn metric list, and per behaviour its opportunities summed over seeds
    (and the events), per turn t >= 1."""
    out: dict = {
        "behaviour": {
            name: {
                key: [sum(c) for c in zip(*[m["behaviour"][name][key] for m in per_seed], strict=True)]
                for key in ("count_per_turn", "events_per_turn")
            }
            for name in per_seed[0]["behaviour"]
        }
    }
    for key in SUMMARIZED:
        columns = list(zip(*[m[key] for m in per_seed], strict=True))
        out[key.replace("_per_turn", "") + "_mean"] = [statistics.mean(c) for c in columns]
        out[key.replace("_per_turn", "") + "_std"] = [statistics.pstdev(c) for c in columns]
    return out


def per_seed(scores: dict[str, list[dict]], runs: list[dict]) -> dict:
    """A method's accuracy per turn on both tasks, steps and seconds per step, seed by seed (in run order)."""
    rows = [
        {**run, "train_task": train["acc_per_turn"], "transfer_task": transfer["acc_per_turn"]}
        for run, train, transfer in zip(runs, scores["train_task"], scores["transfer_task"], strict=True)
    ]
    return {"per_seed": rows}


def accuracy_blocks(results: dict) -> list[Block]:
    """Per task, each method's accuracy per turn (mean ± std over seeds), gain, majority and transitions."""
    blocks: list[Block] = []
    for task_key in ("train_task", "transfer_task"):
        turns = len(next(iter(results["methods"].values()))[task_key]["acc_mean"])
        header = ["method", *(f"turn {t}" for t in range(turns)), "final − turn 0", "majority (final)",
                  "wrong→right", "right→wrong", "≥ 1 right (turn 0)"]  # fmt: skip
        rows = []
        for method, m in results["methods"].items():
            s = m[task_key]
            cells = [f"{100 * a:.1f} ± {100 * d:.1f}" for a, d in zip(s["acc_mean"], s["acc_std"], strict=True)]
            gain = 100 * (s["acc_mean"][-1] - s["acc_mean"][0])
            w2r, r2w = sum(s["wrong_to_right_mean"]), sum(s["right_to_wrong_mean"])
            rows.append([method, *cells, f"{gain:+.1f}", f"{100 * s['majority_mean'][-1]:.1f}", f"{100 * w2r:.1f}",
                         f"{100 * r2w:.1f}", f"{100 * s['any_correct_mean'][0]:.1f}"])  # fmt: skip
        blocks += [Heading(f"{results[task_key]} ({task_key.replace('_', ' ')})"), Table(header, rows)]
    return blocks


def claims_blocks(claims: list[dict]) -> list[Block]:
    if not claims:
        return []
    rows = []
    for c in claims:
        if "transfer" in c:  # a share of (c), shown as a percentage beside the transfer gain in points
            measured = f"{c['transfer']:+.1f} ({100 * c['measured']:.1f}%)"
            if len(c.get("per_seed", [])) > 1:
                measured += " (seeds " + " / ".join(map(format_share, c["per_seed"])) + ")"
            span = "–" if c["low"] is None else f"[{100 * c['low']:.1f}%, {100 * c['high']:.1f}%]"
        else:
            measured = f"{c['measured']:+.1f}"
            if len(c.get("per_seed", [])) > 1:
                measured += " (seeds " + " / ".join(f"{v:+.1f}" for v in c["per_seed"]) + ")"
            span = "–" if c["low"] is None else f"[{c['low']:+.1f}, {c['high']:+.1f}]"
        rows.append([c["claim"], measured, span, c["target"], c["verdict"]])
    return [
        Heading("The claims, measured (final turn, points, 95% paired bootstrap interval; train task unless marked)"),
        Table(["claim", "measured", "95% interval", "target", "verdict"], rows),
        Paragraph(
            "Established: the whole interval clears the target, and so does every seed's value; – where there is no "
            "(c) lead to take a share of. "
            "The interval resamples problems, not runs: the seeds' own values stand beside the mean. "
            "Incentive rows: the arm's rate of the behaviour minus α = β = 0's (points; docs/metrics.md, behaviours)."
        ),
    ]


def ablation_blocks(ablation: dict[str, dict[str, dict]]) -> list[Block]:
    if not ablation:
        return []
    names = list(dict.fromkeys(k for row in ablation.values() for k in row))
    rows = [
        [f"{ARMS[arm].ablation} ({arm})", *(_span(row[n]) if n in row else "–" for n in names)]
        for arm, row in ablation.items()
    ]
    return [
        Heading("The incentive ablation (setting − α = β = 0, same seeds and problems; points, 95% paired interval)"),
        Table(["setting", *(n.replace("_", " ") for n in names)], rows),
        Paragraph(
            "Final turn: accuracy; the others: the behaviour's rate, turns ≥ 1 and agents pooled (docs/metrics.md, "
            "behaviours; conformity error and stubbornness are better lower). Targets: α1 raises self-correction, β0 "
            "persuasion, with the interval above 0."
        ),
    ]


def _span(c: dict) -> str:
    return f"{c['measured']:+.1f}" + ("" if c["low"] is None else f" [{c['low']:+.1f}, {c['high']:+.1f}]")


def behaviour_blocks(results: dict) -> list[Block]:
    """Per method, each behaviour's rate at turns 1..T-1 on the train task (seeds pooled), with its opportunities."""
    methods = {m: r["train_task"]["behaviour"] for m, r in results["methods"].items()}
    names = list(next(iter(methods.values())))
    rows = []
    for method, b in methods.items():
        cells = []
        for name in names:
            turns = zip(b[name]["events_per_turn"], b[name]["count_per_turn"], strict=True)
            cells.append(" / ".join(f"{100 * e / n:.0f}% ({n})" if n else "– (0)" for e, n in turns))
        rows.append([method, *cells])
    return [
        Heading("Behaviours (train task; rate at turns 1, 2, … with its opportunities, pooled over seeds)"),
        Table(["method", *(n.replace("_", " ") for n in names)], rows),
        Paragraph("Definitions: docs/metrics.md (behaviours)."),
    ]


INCENTIVE_EVENTS = {  # event: the weight it carries (rewards.EVENTS)
    "corrective/adopt": "+α0",
    "corrective/self_fix": "+α1",
    "corrective/talked_into_wrong": "−α0",
    "corrective/broke_alone": "−α1",
    "persuasive/persuaded": "+β1",
    "persuasive/peers_fixed_anyway": "+β0",
    "persuasive/misled": "−β1",
    "persuasive/peers_broke_anyway": "−β0",
}


def _mean(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if key in r]
    return sum(values) / len(values) if values else None


def incentives_blocks(results: dict) -> list[Block]:
    """Per discussing method, during training (means over steps, then over seeds): how often each incentive event
    fired, what it changed in its answers' advantage after the group baseline, and how much of the bonus survived."""
    rows = []
    for method, m in results["methods"].items():
        runs = [row["incentives"] for row in m.get("per_seed", []) if row.get("incentives")]
        if not runs or not any(v for k, v in runs[0].items() if k.startswith("incentive/")):
            continue  # the untrained team, or one agent alone: no events
        cells = [method]
        for event in INCENTIVE_EVENTS:
            rate, delta = _mean(runs, f"incentive/{event}"), _mean(runs, f"incentive_adv/{event}")
            cells.append(f"{100 * (rate or 0):.1f}%" + (f" / {delta:+.2f}" if delta is not None else ""))
        for key in ("incentive_adv/kept", "incentive_adv/abs_share"):
            value = _mean(runs, key)
            cells.append("–" if value is None else f"{100 * value:.0f}%")
        rows.append(cells)
    if not rows:
        return []
    names = [f"{e.split('/')[1].replace('_', ' ')} ({w})" for e, w in INCENTIVE_EVENTS.items()]
    return [
        Heading("Incentives during training (means over steps and seeds)"),
        Table(["method", *names, "bonus kept", "share of |A|"], rows),
        Paragraph(
            "Each event: the share of answers where it fired / what it changed in their advantage after the group "
            "baseline (advantage units; only where an incentive weight was set). Bonus kept: the share of an answer's "
            "bonus left after subtracting its group's mean bonus; share of |A|: the incentives' share of the "
            "advantages' size. Definitions: docs/metrics.md (incentive_adv)."
        ),
    ]


def per_seed_blocks(results: dict) -> list[Block]:
    """Per method and seed: train-task accuracy per turn (steps, seconds per step), transfer task's final turn."""
    seeds = sorted({row["seed"] for m in results["methods"].values() for row in m.get("per_seed", [])})
    if not seeds:
        return []
    rows = []
    for method, m in results["methods"].items():
        by_seed = {row["seed"]: row for row in m.get("per_seed", [])}
        cells = [method]
        for s in seeds:
            row = by_seed.get(s)
            if row is None:
                cells += ["–", "–"]
                continue
            run = f" ({row['steps']:,} steps, {row['sec_per_step']:.2f} s)" if "steps" in row else ""
            cells += [
                " / ".join(f"{100 * a:.1f}" for a in row["train_task"]) + run,
                f"{100 * row['transfer_task'][-1]:.1f}",
            ]
        rows.append(cells)
    return [
        Paragraph(
            f"Per seed ({results['train_task']} turn 0 / 1 / …, steps and mean seconds per step; then "
            f"{results['transfer_task']} final turn):"
        ),
        Table(["method", *(c for s in seeds for c in (f"seed {s}", "transfer"))], rows),
    ]


def results_blocks(results: dict) -> list[Block]:
    """Every table of a results.json, with the notes on how it was run."""
    blocks = [
        *accuracy_blocks(results),
        *claims_blocks(results["claims"]),
        *ablation_blocks(results["incentive_ablation"]),
        *behaviour_blocks(results),
        *incentives_blocks(results),
        *per_seed_blocks(results),
    ]
    matched = [f"{m}: as many steps as {ARMS[m].steps_of}" for m in results["methods"] if ARMS[m].steps_of]
    same = f" ({'; '.join(matched)})" if matched else ""
    if "seeds_done" in results:
        done = ", ".join(f"{m} {n}" for m, n in results["seeds_done"].items())
        blocks.append(Paragraph(f"Seeds evaluated so far: {done}.", "Partial: the run is still going or was cut off."))
    else:
        fewer = {m: [r["seed"] for r in v.get("per_seed", [])] for m, v in results["methods"].items()}
        fewer = {m: s for m, s in fewer.items() if len(s) < len(results["seeds"])}
        if fewer:  # trials read back from the comparison's directory, run on fewer seeds than the rest
            listed = "; ".join(f"{m}: {', '.join(map(str, s))}" for m, s in fewer.items())
            blocks.append(Paragraph(f"Run on fewer seeds (claims rows pair them with the same seeds of the others): "
                                    f"{listed}."))  # fmt: skip
    blocks.append(
        Paragraph(
            f"Seeds {results['seeds']}; {results['budget_min']} min of training per method{same}; "
            f"{results['eval_problems']} held-out problems per task (accuracy %, mean ± std over seeds; transitions: "
            "share of answers over all turn pairs; ≥ 1 right: problems where at least one agent is right at turn 0, "
            "the most a discussion can recover)."
        )
    )
    return blocks


def read_results(path: Path) -> dict:
    """A results.json as `maporl reproduce` writes it; one in another format is refused, naming the file."""
    again = "rewrite it with `maporl reproduce --tables-only`"
    results = read_json(path, RESULTS_KEYS, again)
    for method, m in results["methods"].items():
        check_format(path, m, ("train_task", "transfer_task", "per_seed"), again, f"methods.{method}.")
        for task in ("train_task", "transfer_task"):
            check_format(path, m[task], SUMMARY_KEYS, again, f"methods.{method}.{task}.")
    return results


def results_markdown(results: dict) -> str:
    return to_markdown(results_blocks(results))


def results_html(results: dict) -> str:
    return to_html(results_blocks(results))
