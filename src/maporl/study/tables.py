"""The tables of `maporl reproduce`: per-method summaries over seeds, and results.md (accuracy per turn, the claims
with their paired intervals, behaviours, and each seed's run)."""

from __future__ import annotations

import statistics

from maporl.study.arms import ARMS
from maporl.study.claims import ablation_markdown, claims_markdown


def summarize(per_seed: list[dict]) -> dict:
    """Mean and std over seeds of every per-turn metric list (`any_correct_per_turn` only where every seed has it:
    eval.json files written before it existed lack it), and per behaviour its opportunities summed over seeds and
    its rate over them, per turn t >= 1 (where every seed has the behaviours)."""
    out: dict = {}
    if all("behaviour" in m for m in per_seed):
        out["behaviour"] = {
            name: {
                key: [sum(c) for c in zip(*[m["behaviour"][name][key] for m in per_seed], strict=True)]
                for key in ("count_per_turn", "events_per_turn")
            }
            for name in per_seed[0]["behaviour"]
        }
    keys = ["acc_per_turn", "majority_per_turn", "wrong_to_right", "right_to_wrong"]
    if all("any_correct_per_turn" in m for m in per_seed):
        keys.append("any_correct_per_turn")
    for key in keys:
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


def per_seed_markdown(results: dict) -> list[str]:
    """Per method and seed: train-task accuracy per turn (steps, seconds per step), transfer task's final turn."""
    seeds = sorted({row["seed"] for m in results["methods"].values() for row in m.get("per_seed", [])})
    if not seeds:
        return []
    lines = [
        f"Per seed ({results['train_task']} turn 0 / 1 / …, steps and mean seconds per step; then "
        f"{results['transfer_task']} final turn):\n",
        "| method | " + " | ".join(f"seed {s} | transfer" for s in seeds) + " |",
        "|---" * (2 * len(seeds) + 1) + "|",
    ]
    for method, m in results["methods"].items():
        by_seed = {row["seed"]: row for row in m.get("per_seed", [])}
        cells = []
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
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return [*lines, ""]


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


def incentives_markdown(results: dict) -> list[str]:
    """Per discussing method, during training (means over steps, then over seeds): how often each incentive event
    fired, what it changed in its answers' advantage after the group baseline, and how much of the bonus survived."""
    rows = []
    for method, m in results["methods"].items():
        runs = [row["incentives"] for row in m.get("per_seed", []) if row.get("incentives")]
        if not runs or not any(v for k, v in runs[0].items() if k.startswith("incentive/")):
            continue  # the untrained team, or one agent alone: no events

        cells = []
        for event in INCENTIVE_EVENTS:
            rate, delta = _mean(runs, f"incentive/{event}"), _mean(runs, f"incentive_adv/{event}")
            cells.append(f"{100 * (rate or 0):.1f}%" + (f" / {delta:+.2f}" if delta is not None else ""))
        for key in ("incentive_adv/kept", "incentive_adv/abs_share"):
            value = _mean(runs, key)
            cells.append("–" if value is None else f"{100 * value:.0f}%")
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    names = [f"{e.split('/')[1].replace('_', ' ')} ({w})" for e, w in INCENTIVE_EVENTS.items()]
    return [
        "### Incentives during training (means over steps and seeds)\n",
        "| method | " + " | ".join(names) + " | bonus kept | share of \\|A\\| |",
        "|---" * (len(names) + 3) + "|",
        *rows,
        "",
        "Each event: the share of answers where it fired / what it changed in their advantage after the group "
        "baseline (advantage units; only where an incentive weight was set). Bonus kept: the share of an answer's "
        "bonus left after subtracting its group's mean bonus; share of |A|: the incentives' share of the advantages' "
        "size. Definitions: docs/metrics.md (incentive_adv).",
        "",
    ]


def behaviour_markdown(results: dict) -> list[str]:
    """Per method, each behaviour's rate at turns 1..T-1 on the train task (seeds pooled), with its opportunities."""
    methods = {
        m: r["train_task"]["behaviour"] for m, r in results["methods"].items() if "behaviour" in r["train_task"]
    }
    if not methods:
        return []
    names = list(next(iter(methods.values())))
    lines = [
        "### Behaviours (train task; rate at turns 1, 2, … with its opportunities, pooled over seeds)\n",
        "| method | " + " | ".join(n.replace("_", " ") for n in names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for method, b in methods.items():
        cells = []
        for name in names:
            turns = zip(b[name]["events_per_turn"], b[name]["count_per_turn"], strict=True)
            cells.append(" / ".join(f"{100 * e / n:.0f}% ({n})" if n else "– (0)" for e, n in turns))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "Definitions: docs/metrics.md (behaviours).", ""]
    return lines


def results_markdown(results: dict) -> str:
    lines = []
    for task_key in ("train_task", "transfer_task"):
        turns = len(next(iter(results["methods"].values()))[task_key]["acc_mean"])
        lines.append(f"### {results[task_key]} ({task_key.replace('_', ' ')})\n")
        head = "| method | " + " | ".join(f"turn {t}" for t in range(turns)) + " | final − turn 0 | majority (final) |"
        head += " wrong→right | right→wrong | ≥ 1 right (turn 0) |"
        lines += [head, "|---" * (turns + 6) + "|"]
        for method, m in results["methods"].items():
            s = m[task_key]
            cells = [f"{100 * a:.1f} ± {100 * d:.1f}" for a, d in zip(s["acc_mean"], s["acc_std"], strict=True)]
            gain = 100 * (s["acc_mean"][-1] - s["acc_mean"][0])
            w2r, r2w = sum(s["wrong_to_right_mean"]), sum(s["right_to_wrong_mean"])
            ceiling = f"{100 * s['any_correct_mean'][0]:.1f}" if "any_correct_mean" in s else "–"
            lines.append(
                f"| {method} | " + " | ".join(cells) + f" | {gain:+.1f} | {100 * s['majority_mean'][-1]:.1f} | "
                f"{100 * w2r:.1f} | {100 * r2w:.1f} | {ceiling} |"
            )
        lines.append("")
    lines += claims_markdown(results.get("claims", []))
    lines += ablation_markdown(results.get("incentive_ablation", {}))
    lines += behaviour_markdown(results)
    lines += incentives_markdown(results)
    lines += per_seed_markdown(results)
    matched = [f"{m}: as many steps as {ARMS[m].steps_of}" for m in results["methods"] if ARMS[m].steps_of]
    same = f" ({'; '.join(matched)})" if matched else ""
    if "seeds_done" in results:
        done = ", ".join(f"{m} {n}" for m, n in results["seeds_done"].items())
        lines.append(f"**Partial: the run is still going or was cut off.** Seeds evaluated so far: {done}.\n")
    else:
        fewer = {m: [r["seed"] for r in v.get("per_seed", [])] for m, v in results["methods"].items()}
        fewer = {m: s for m, s in fewer.items() if len(s) < len(results["seeds"])}
        if fewer:  # trials read back from the comparison's directory, run on fewer seeds than the rest
            listed = "; ".join(f"{m}: {', '.join(map(str, s))}" for m, s in fewer.items())
            lines.append(f"Run on fewer seeds (claims rows pair them with the same seeds of the others): {listed}.\n")
    lines.append(
        f"Seeds {results['seeds']}; {results['budget_min']} min of training per method{same}; "
        f"{results['eval_problems']} held-out problems per task (accuracy %, mean ± std over seeds; transitions: "
        "share of answers over all turn pairs; ≥ 1 right: problems where at least one agent is right at turn 0, the "
        "most a discussion can recover; – where an evaluation predates that metric)."
    )
    return "\n".join(lines) + "\n"
