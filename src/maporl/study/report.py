"""`maporl report RUN_DIR`: one self-contained HTML page (no network) for a training run, an eval run or a
`maporl reproduce` directory: plots (also written as PNG files), the config, the metrics table and a transcript
browser with outcome filters. Model text is inserted with `textContent`, never as HTML.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from maporl.errors import UsageError
from maporl.evaluation import read_eval, table_rows
from maporl.study.figures import pyplot, save_figure
from maporl.study.tables import read_results, results_html

MAX_TRANSCRIPTS = 300  # embedded in the page; the JSONL files keep them all


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a half-written last line of a killed run
    return rows


def plot_training(rows: list[dict], plots: Path) -> list[Path]:
    """Accuracy per turn (train and eval), reward and loss curves over steps."""
    plt, out = pyplot(), []
    steps = [r for r in rows if "time/step" in r]
    evals = [r for r in rows if "eval/acc/turn0" in r]
    if steps:
        turns = sorted(int(k.rsplit("turn", 1)[1]) for k in steps[0] if k.startswith("train/acc/turn"))
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for t in turns:
            xs, ys = [r["step"] for r in steps], [r[f"train/acc/turn{t}"] for r in steps]
            ax.plot(xs, _smooth(ys), label=f"train turn {t}")
        for t in turns:
            if evals:
                ax.plot(
                    [r["step"] for r in evals], [r[f"eval/acc/turn{t}"] for r in evals], "o--", label=f"eval turn {t}"
                )
        ax.set(xlabel="step", ylabel="accuracy", title="accuracy per turn (train: moving average of 10 steps)")
        ax.legend(fontsize=7)
        out.append(save_figure(fig, plots / "accuracy.png"))
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
        axes[0].plot([r["step"] for r in steps], _smooth([r["reward/mean"] for r in steps]))
        axes[0].set(xlabel="step", title="mean reward")
        for key in ("loss/policy", "loss/value", "kl"):
            if any(key in r for r in steps):
                pts = [(r["step"], r[key]) for r in steps if key in r]
                axes[1].plot([p[0] for p in pts], _smooth([p[1] for p in pts]), label=key)
        axes[1].set(xlabel="step", title="losses")
        axes[1].legend(fontsize=7)
        out.append(save_figure(fig, plots / "reward_loss.png"))
    return out


def plot_eval(metrics: dict, plots: Path, name: str = "eval") -> list[Path]:
    """Accuracy per agent and turn, and the transition rates between turns."""
    plt = pyplot()
    turns = list(range(metrics["num_turns"]))
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for i, accs in enumerate(metrics["acc_per_agent_turn"]):
        axes[0].plot(turns, accs, "o-", label=f"agent {i + 1}")
    axes[0].plot(turns, metrics["acc_per_turn"], "k-", lw=2, label="team mean")
    axes[0].plot(turns, metrics["majority_per_turn"], "k--", label="majority")
    axes[0].set(xlabel="turn", ylabel="accuracy", title="accuracy per agent x turn", xticks=turns)
    axes[0].legend(fontsize=7)
    between = [f"{t - 1}→{t}" for t in turns[1:]]
    if between:
        x = range(len(between))
        axes[1].bar([v - 0.2 for v in x], metrics["wrong_to_right"], 0.4, label="wrong→right")
        axes[1].bar([v + 0.2 for v in x], metrics["right_to_wrong"], 0.4, label="right→wrong")
        axes[1].set(xticks=list(x), xticklabels=between, title="transitions (share of answers)")
        axes[1].legend(fontsize=7)
    return [save_figure(fig, plots / f"{name}.png")]


def plot_methods(results: dict, plots: Path) -> list[Path]:
    """`maporl reproduce`: accuracy per turn of every method (mean over seeds, error bars = std)."""
    plt, out = pyplot(), []
    for task_key in ("train_task", "transfer_task"):
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for method, m in results["methods"].items():
            s = m.get(task_key)
            if s:
                turns = list(range(len(s["acc_mean"])))
                ax.errorbar(turns, s["acc_mean"], yerr=s["acc_std"], marker="o", capsize=3, label=method)
        ax.set(xlabel="turn", ylabel="team accuracy", title=f"{results[task_key]} ({task_key.replace('_', ' ')})")
        ax.legend(fontsize=7)
        out.append(save_figure(fig, plots / f"methods_{task_key}.png"))
    return out


def _smooth(ys: list[float], k: int = 10) -> list[float]:
    return [sum(ys[max(0, i - k + 1) : i + 1]) / len(ys[max(0, i - k + 1) : i + 1]) for i in range(len(ys))]


def _outcomes(tr: dict) -> dict:
    """Per-answer correctness and the transcript's outcome tags for the browser's filter."""
    truth = tr["problem"]["answer"]
    turns = [[a["parsed"] == truth for a in turn] for turn in tr["answers"]]
    pairs = [(p, q) for a, b in zip(turns, turns[1:], strict=False) for p, q in zip(a, b, strict=True)]
    tags = []
    if any(not p and q for p, q in pairs):
        tags.append("wrong→right")
    if any(p and not q for p, q in pairs):
        tags.append("right→wrong")
    tags.append("final all right" if all(turns[-1]) else "final all wrong" if not any(turns[-1]) else "final mixed")
    return {"correct": turns, "tags": tags}


def _page(title: str, sections: list[str], transcripts: list[dict]) -> str:
    data = json.dumps(
        [
            {
                "question": tr["problem"]["question"],
                "answer": tr["problem"]["answer"],
                "turns": [[{"text": a["response"], "parsed": a["parsed"]} for a in turn] for turn in tr["answers"]],
                **_outcomes(tr),
            }
            for tr in transcripts[:MAX_TRANSCRIPTS]
        ]
    ).replace("</", "<\\/")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
h1 {{ font-size: 1.5em; }} h2 {{ border-bottom: 1px solid #ccc; margin-top: 2em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
img {{ max-width: 100%; display: block; margin: 1em 0; }}
pre {{ background: #f6f6f6; padding: 1em; overflow: auto; max-height: 30em; }}
.tr {{ border: 1px solid #ddd; margin: .6em 0; padding: .5em .8em; }}
.ok {{ color: #16702e; }} .bad {{ color: #b3261e; }} .meta {{ color: #666; font-size: .9em; }}
.turn {{ margin: .3em 0 .3em 1em; }} .reply {{ white-space: pre-wrap; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
{"".join(sections)}
<h2>Transcripts</h2>
<p>Filter: <select id="filter"><option>all</option><option>wrong→right</option><option>right→wrong</option>
<option>final all right</option><option>final mixed</option><option>final all wrong</option></select>
<span id="count" class="meta"></span></p>
<div id="transcripts"></div>
<script id="data" type="application/json">{data}</script>
<script>
const data = JSON.parse(document.getElementById("data").textContent);
function el(tag, cls, text) {{ const e = document.createElement(tag); if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text; return e; }}
function render() {{
  const f = document.getElementById("filter").value, box = document.getElementById("transcripts");
  box.replaceChildren();
  const shown = data.filter(t => f === "all" || t.tags.includes(f));
  document.getElementById("count").textContent = shown.length + " of " + data.length + " transcripts";
  for (const t of shown) {{
    const d = el("div", "tr");
    d.append(el("div", "", "Q: " + t.question), el("div", "meta", "truth: " + t.answer + " · " + t.tags.join(", ")));
    t.turns.forEach((turn, k) => {{
      const tb = el("div", "turn"); tb.append(el("b", "", "turn " + k));
      turn.forEach((a, i) => {{
        const ok = t.correct[k][i], row = el("div", ok ? "ok" : "bad");
        row.append(el("span", "", (ok ? "✓ " : "✗ ") + "Agent " + (i + 1) + " (" + (a.parsed ?? "no answer") + "): "),
                   el("span", "reply", a.text));
        tb.append(row);
      }});
      d.append(tb);
    }});
    box.append(d);
  }}
}}
document.getElementById("filter").addEventListener("change", render);
render();
</script></body></html>
"""


def _img(path: Path) -> str:
    b64 = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{b64}">'


def metrics_table(m: dict) -> str:
    turns = range(m["num_turns"])
    head = "<tr><th></th>" + "".join(f"<th>turn {t}</th>" for t in turns) + "</tr>"
    body = "".join(
        f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
        for name, cells in table_rows(m)
    )
    note = "behaviours: rate (opportunities), docs/metrics.md"
    return f"<table>{head}{body}</table><p class='meta'>{m['num_problems']} problems; {note}</p>"


def write_report(run_dir: Path) -> Path:
    """Write run_dir/report.html (and run_dir/plots/*.png); returns the page's path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir} is not a directory; pass a run directory, e.g. maporl report runs/tiny")
    plots, sections, transcripts = run_dir / "plots", [], []
    results = run_dir / "results.json"
    if results.is_file():
        res = read_results(results)
        sections.append("<h2>Results</h2>" + results_html(res))
        sections += [_img(p) for p in plot_methods(res, plots)]
        for method in res["methods"]:
            transcripts += _read_jsonl(run_dir / method / "seed0" / "eval_train_task" / "transcripts.jsonl")[:60]
    rows = _read_jsonl(run_dir / "metrics.jsonl")
    if rows:
        sections.append("<h2>Training</h2>" + "".join(_img(p) for p in plot_training(rows, plots)))
    eval_file = run_dir / "eval.json"
    if eval_file.is_file():
        m = read_eval(eval_file)
        sections.append("<h2>Evaluation</h2>" + metrics_table(m) + "".join(_img(p) for p in plot_eval(m, plots)))
        transcripts += _read_jsonl(run_dir / "eval_transcripts.jsonl") or _read_jsonl(run_dir / "transcripts.jsonl")
    if not sections:
        raise UsageError(f"{run_dir} has no metrics.jsonl, eval.json or results.json; pass a maporl run directory")
    config = run_dir / "config.yaml"
    if config.is_file():
        sections.append(f"<h2>Config</h2><pre>{html.escape(config.read_text())}</pre>")
    page = run_dir / "report.html"
    page.write_text(_page(f"maporl report: {run_dir.name}", sections, transcripts), encoding="utf-8")
    return page
