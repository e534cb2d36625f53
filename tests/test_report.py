"""report.html (plots, config, metrics, transcript browser), the single-agent seat copy and `maporl reproduce` end
to end on a random tiny model."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from maporl.cli import main
from maporl.study.behaviour import behaviour_metrics, parse_correct
from maporl.study.report import write_report
from maporl.study.reproduce import steps_trained

HOSTILE = '</script><script>alert("x")</script><img src=x onerror=alert(1)>'


def transcript(answers, truth="5", question="What is 2+3?"):
    return {
        "problem": {"id": "p", "question": question, "answer": truth, "family": "t", "solution": None},
        "answers": [
            [
                {"agent": i, "turn": t, "prompt": [], "response": f"reply {HOSTILE}", "parsed": a}
                for i, a in enumerate(turn)
            ]
            for t, turn in enumerate(answers)
        ],
        "meta": {},
    }


def fake_run(path):
    rows = [
        {"step": s, "time/step": 1.0, "reward/mean": 0.1 * s, "loss/policy": -0.01 * s}
        | {f"train/acc/turn{t}": 0.3 + 0.01 * s + 0.02 * t for t in range(2)}
        for s in range(1, 21)
    ]
    rows.append({"step": 20} | {f"eval/acc/turn{t}": 0.5 + 0.1 * t for t in range(2)})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 21, "trunc')
    metrics = {
        "num_problems": 3,
        "num_agents": 2,
        "num_turns": 2,
        "acc_per_turn": [0.5, 0.66],
        "majority_per_turn": [0.33, 0.66],
        "acc_per_agent_turn": [[0.33, 0.66], [0.66, 0.66]],
        "wrong_to_right": [0.33],
        "right_to_wrong": [0.16],
        "consensus_per_turn": [0.33, 1.0],
        "any_correct_per_turn": [0.66, 1.0],
        "parse_rate": 1.0,
        "problem_ids": ["p", "p", "p"],
        "acc_per_problem_turn": [[0.5, 1.0], [1.0, 0.5], [0.0, 0.0]],
        "correct_per_problem": ["01 11", "11 10", "00 00"],
    }
    metrics["behaviour"] = behaviour_metrics(parse_correct(metrics["correct_per_problem"]))
    (path / "eval.json").write_text(json.dumps(metrics))
    trs = [
        transcript([["4", "5"], ["5", "5"]]),  # wrong -> right, final all right
        transcript([["5", "5"], ["5", "6"]]),  # right -> wrong, final mixed
        transcript([[None, "7"], ["7", "7"]]),  # final all wrong
    ]
    (path / "eval_transcripts.jsonl").write_text("".join(json.dumps(t) + "\n" for t in trs))
    (path / "config.yaml").write_text("seed: 0\nrun_name: <b>bold</b>\n")


def embedded_data(page: str) -> list[dict]:
    m = re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S)
    return json.loads(m.group(1))


def test_report_is_self_contained_and_escapes_model_text(tmp_path):
    fake_run(tmp_path)
    page_path = write_report(tmp_path)
    page = page_path.read_text()
    assert page_path == tmp_path / "report.html"
    for png in ("accuracy.png", "reward_loss.png", "eval.png"):
        data = (tmp_path / "plots" / png).read_bytes()
        assert data.startswith(b"\x89PNG") and base64.b64encode(data).decode() in page
    assert "http://" not in page and "https://" not in page  # nothing to fetch: renders offline
    assert HOSTILE not in page and "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    data = embedded_data(page)
    assert [t["tags"] for t in data] == [
        ["wrong→right", "final all right"],
        ["right→wrong", "final mixed"],
        ["final all wrong"],
    ]
    assert data[0]["turns"][0][0]["text"].endswith(HOSTILE)  # kept verbatim as data, shown with textContent
    assert "innerHTML" not in page
    assert "<td>66.0%</td>" in page  # the metrics table


def test_report_of_nothing_is_a_usage_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err


def test_a_file_in_another_format_is_refused_in_one_line_naming_it(tmp_path, capsys):
    """An eval.json or results.json lacking a key of the current format: one line names the file, what it lacks
    and how to write it again."""
    fake_run(tmp_path)
    metrics = json.loads((tmp_path / "eval.json").read_text())
    del metrics["behaviour"], metrics["any_correct_per_turn"]
    (tmp_path / "eval.json").write_text(json.dumps(metrics))
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'eval.json'} is in a format" in err
    assert "(no any_correct_per_turn, behaviour); evaluate the team again" in err
    (tmp_path / "eval.json").unlink()
    (tmp_path / "results.json").write_text(json.dumps({"methods": {}}))
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'results.json'} is in a format" in err
    assert "(no train_task, transfer_task, seeds); rewrite it with `maporl reproduce --tables-only`" in err


def test_blocks_render_as_markdown_and_html():
    from maporl.study.document import Heading, Paragraph, Table, to_html, to_markdown

    blocks = [Heading("A <x>"), Table(["m", "|A|"], [["a", "1.0"]]), Paragraph("note", "Partial:")]
    assert to_markdown(blocks) == "### A <x>\n\n| m | \\|A\\| |\n|---|---|\n| a | 1.0 |\n\n**Partial:** note\n"
    assert to_html(blocks) == (
        "<h3>A &lt;x&gt;</h3>\n<table><tr><th>m</th><th>|A|</th></tr><tr><td>a</td><td>1.0</td></tr></table>\n"
        "<p><strong>Partial:</strong> note</p>"
    )


def test_the_reports_results_tables_keep_every_column(tmp_path):
    """The report's tables come from results.json, not from results.md read back: the incentive table's "share of
    |A|" (escaped as \\|A\\| in markdown) is one column, and every row has as many cells as the header."""
    from test_reproduce import evaluation as reproduce_evaluation

    from maporl.study.tables import results_markdown, summarize

    evaluation = reproduce_evaluation(0.5)
    incentives = {"incentive/corrective/adopt": 0.1, "incentive_adv/corrective/adopt": 0.5, "incentive_adv/kept": 0.7,
                  "incentive_adv/abs_share": 0.2}  # fmt: skip
    run = {"seed": 0, "steps": 3, "sec_per_step": 1.0, "incentives": incentives, "train_task": [0.5, 0.6],
           "transfer_task": [0.5, 0.6]}  # fmt: skip
    method = {"train_task": summarize([evaluation]), "transfer_task": summarize([evaluation]), "per_seed": [run]}
    results = {"train_task": "arith_chain", "transfer_task": "arith_word_unseen", "seeds": [0], "budget_min": 1.0,
               "eval_problems": 2, "minutes": 0.1, "methods": {"maporl": method}, "claims": [],
               "incentive_ablation": {}}  # fmt: skip
    (tmp_path / "results.json").write_text(json.dumps(results))
    (tmp_path / "results.md").write_text(results_markdown(results))
    assert "| share of \\|A\\| |" in (tmp_path / "results.md").read_text()
    page = write_report(tmp_path).read_text()
    tables = re.findall(r"<table>(.*?)</table>", page.split("<h2>Results</h2>")[1], re.S)
    incentive = next(t for t in tables if "bonus kept" in t)
    header, *rows = re.findall(r"<tr>(.*?)</tr>", incentive)
    assert re.findall(r"<th>(.*?)</th>", header)[-2:] == ["bonus kept", "share of |A|"]
    assert [len(re.findall(r"<td>", row)) for row in rows] == [header.count("<th>")]


@pytest.mark.slow
def test_reproduce_end_to_end(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "rep"
    argv = [
        "reproduce",
        "--quiet",
        "--budget-min",
        "0.02",
        "--out",
        str(out),
        f"model.name_or_path={tiny_model_dir}",
        "discussion.num_agents=2",
        "discussion.turns=2",
        "generation.max_new_tokens=6",
        "train.problems_per_step=2",
        "algo.rollouts_per_problem=2",
        "eval.num_problems=3",
    ]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    from maporl.study.arms import DEFAULT_ARMS

    methods = list(DEFAULT_ARMS)  # the default comparison: all six, in the table's order
    assert len(methods) == 6 and list(results["methods"]) == methods
    for m in methods:
        for key in ("train_task", "transfer_task"):
            assert len(results["methods"][m][key]["acc_mean"]) == 2
    single = yaml.safe_load((out / "single_agent_rl" / "seed0" / "config.yaml").read_text())
    assert single["discussion"]["num_agents"] == 1 and single["discussion"]["turns"] == 1  # trained alone, turn 0
    assert (out / "single_agent_rl" / "seed0" / "eval_train_task" / "eval.json").is_file()
    # The same-problems baseline ran after maporl, for exactly maporl's steps, so on the same problems.
    same = out / "single_agent_rl_same_problems" / "seed0"
    maporl_steps = steps_trained(out / "maporl" / "seed0")
    assert maporl_steps >= 1 and steps_trained(same) == maporl_steps
    assert yaml.safe_load((same / "config.yaml").read_text())["train"]["max_steps"] == maporl_steps
    table = (out / "results.md").read_text()
    assert all(f"| {m} |" in table for m in methods) and "arith_word" in table
    assert "≥ 1 right (turn 0) |" in table
    accuracy_rows = [line for line in table.splitlines() if line.startswith("| ") and "±" in line]  # method x task
    assert len(accuracy_rows) == 12 and not any(line.endswith("| – |") for line in accuracy_rows)  # all have it
    assert "### The claims" in table and "### Behaviours" in table and "self correction" in table
    page = (out / "report.html").read_text()
    assert "methods_train_task.png" in " ".join(p.name for p in (out / "plots").iterdir())
    assert "<table>" in page and "maporl_no_incentives" in page
    assert main(argv) == 2 and "already holds results" in capsys.readouterr().err
    # --resume: evaluated methods are read back; an interrupted one (no done.json) is run again from scratch.
    done = out / "maporl" / "seed0" / "done.json"
    done.unlink()
    stale = out / "maporl" / "seed0" / "stale.txt"
    stale.write_text("from the interrupted run")
    kept = (out / "sft_traces" / "seed0" / "eval_train_task" / "eval.json").stat().st_mtime_ns
    assert main([*argv[:1], "--resume", *argv[1:]]) == 0
    assert done.is_file() and not stale.exists()
    assert (out / "sft_traces" / "seed0" / "eval_train_task" / "eval.json").stat().st_mtime_ns == kept
    again = json.loads((out / "results.json").read_text())["methods"]
    assert all(again[m] == results["methods"][m] for m in methods if m != "maporl")  # read back, not rerun
    assert main([*argv[:1], "--resume", *argv[1:], "discussion.turns=3"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert main(["reproduce", "--resume", "--out", str(tmp_path / "none")]) == 2


@pytest.mark.skipif(
    not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")),
    reason="no Chromium on PATH (apt-get install chromium)",
)
def test_report_renders_in_headless_chromium_offline(tmp_path):
    """The page in a real browser with every network request refused: the plots draw, the transcript browser runs."""
    fake_run(tmp_path)
    page = write_report(tmp_path)
    script = Path(__file__).resolve().parents[1] / "scripts" / "screenshot_report.sh"
    out = tmp_path / "shot.png"
    subprocess.run(["bash", str(script), str(page), str(out), "1000x1600"], check=True, timeout=120)
    from matplotlib.image import imread

    pixels = imread(out)
    assert pixels.shape[:2] == (1600, 1000) and pixels.std() > 0.05  # not a blank page
    browser = next(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b))
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--proxy-server=127.0.0.1:9",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "3 of 3 transcripts" in dom and dom.count('src="data:image/png;base64,') >= 3
