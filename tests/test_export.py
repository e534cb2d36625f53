"""`maporl export`: each agent's folder is what peft (and vLLM) read, the merged models are the team's agents, and
`--checkpoint EXPORT` evaluates exactly as the run did."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import RandomVerifier, tiny_cfg
from peft import PeftModel
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from maporl import api, checkpoint, lora_batch
from maporl.cli.commands import main
from maporl.evaluation import format_table, read_eval
from maporl.serving.export import export_run

IDS = torch.tensor([[5, 17, 42, 99, 7, 250, 3, 11], [9, 8, 7, 6, 5, 4, 3, 2]])  # fixed token ids, 2 rows


def trained_run(model_dir, run_dir, *extra: str):
    """A 2-step run of the tiny model whose scores vary (`RandomVerifier`), so the adapters move away from zero."""
    from maporl import trainer
    from maporl.distributed import backend

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(backend, "LabelVerifier", RandomVerifier)
        trainer.train(tiny_cfg(model_dir, "train.checkpoint_every=1", *extra), run_dir, quiet=True)
    return run_dir


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    return trained_run(tiny_model_dir, tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports") / "team"
    export_run(run, out)
    return out


@pytest.fixture(scope="module")
def team(run):
    """The run's team as maporl loads it (mixed-adapter batches routed per row)."""
    run_cfg, ckpt, _ = checkpoint.resolve(str(run))
    return checkpoint.load_team(_cfg(run_cfg), ckpt)


def _cfg(run_cfg):
    from maporl.config import load_config

    return load_config(None, [], base=run_cfg)


def team_logprobs(team, adapter: str, key: str = "base") -> torch.Tensor:
    model = team.models[key]
    with torch.no_grad(), lora_batch.routing(model, [adapter] * len(IDS)):
        return torch.log_softmax(model(input_ids=IDS).logits.float(), -1)


def logprobs(model) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=IDS).logits.float(), -1)


def test_adapter_folders_are_peft_format(exported, team, tiny_model_dir, tmp_path):
    """Files, keys and config as peft's own save_pretrained writes them for the same adapter."""
    team.models["base"].save_pretrained(str(tmp_path / "peft"), selected_adapters=["agent1"])
    theirs, ours = tmp_path / "peft" / "agent1", exported / "agent_1"
    assert sorted(p.name for p in ours.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    with (
        safe_open(theirs / "adapter_model.safetensors", "pt") as a,
        safe_open(ours / "adapter_model.safetensors", "pt") as b,
    ):
        assert sorted(a.keys()) == sorted(b.keys()) and b.metadata() == {"format": "pt"}
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())
    config, reference = (json.loads((d / "adapter_config.json").read_text()) for d in (ours, theirs))
    assert config["base_model_name_or_path"] == str(tiny_model_dir.resolve())
    for field in ("peft_type", "task_type", "r", "lora_alpha", "lora_dropout", "inference_mode", "bias"):
        assert config[field] == reference[field], field
    assert sorted(config["target_modules"]) == sorted(reference["target_modules"])  # every module by its full name


def test_peft_loads_each_agent_as_the_team_has_it(exported, team, tiny_model_dir):
    base_logp = logprobs(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    for k in range(2):
        agent = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(tiny_model_dir), exported / f"agent_{k}"
        )
        ours = logprobs(agent.eval())
        assert (ours - team_logprobs(team, f"agent{k}")).abs().max() < 1e-5
        assert (ours - base_logp).abs().max() > 1e-4  # the adapters were trained: the check has something to see


def test_merged_models_are_the_agents(run, team, tmp_path):
    out = tmp_path / "merged"
    assert main(["export", str(run), "--out", str(out), "--merge"]) == 0
    for k in range(2):
        model = AutoModelForCausalLM.from_pretrained(out / f"agent_{k}").eval()
        assert (logprobs(model) - team_logprobs(team, f"agent{k}")).abs().max() < 1e-4
        assert AutoTokenizer.from_pretrained(out / f"agent_{k}").chat_template  # served as a chat model as is
    assert json.loads((out / "team.json").read_text())["kind"] == "merged"
    metrics = api.evaluate(out)  # --checkpoint MERGED: a team of the agents' folders
    assert len(metrics["acc_per_agent_turn"]) == 2 and metrics["num_turns"] == 2


def same_evaluation(a, b):
    drop = ("seconds", "tokens_per_s")
    ma, mb = (json.loads((d / "eval.json").read_text()) for d in (a, b))
    assert {k: v for k, v in ma.items() if k not in drop} == {k: v for k, v in mb.items() if k not in drop}
    assert (a / "transcripts.jsonl").read_text() == (b / "transcripts.jsonl").read_text()  # every sampled token


def test_eval_on_the_export_equals_eval_on_the_run(run, exported, tmp_path):
    for name, source in (("run", run), ("export", exported)):
        assert main(["eval", "--checkpoint", str(source), "--out", str(tmp_path / name), "--quiet"]) == 0
    same_evaluation(tmp_path / "run", tmp_path / "export")


def test_team_json_and_model_card(run, exported, tiny_model_dir):
    team = json.loads((exported / "team.json").read_text())
    assert team["format"] == "maporl-team" and team["kind"] == "adapters"
    assert (team["num_agents"], team["turns"], team["shared_adapter"]) == (2, 2, False)
    assert [a["folder"] for a in team["agents"]] == ["agent_0", "agent_1"]
    assert team["base_models"] == [{"name_or_path": str(tiny_model_dir), "path": str(tiny_model_dir.resolve())}]
    assert team["source"]["step"] == 2 and team["evaluation"]["num_problems"] == 2
    assert "You said: {own answer at turn t-1}" in team["prompt_format"]["turn_t"][0]["content"]
    assert team["answer_format"]["final_answer"] == "The answer is N"
    card = (exported / "README.md").read_text()
    assert format_table(read_eval(run / "eval.json")) in card
    assert f"maporl export {run} --out {exported}" in card and "maporl train --config config.yaml" in card
    assert f"--lora-modules agent_0={exported}/agent_0 agent_1={exported}/agent_1" in card


def test_an_earlier_checkpoint_exports_without_the_run_evaluation(run, tmp_path):
    out = tmp_path / "step1"
    export_run(run / "checkpoints" / "step_000001", out)
    assert not (out / "eval.json").exists() and "Not evaluated here" in (out / "README.md").read_text()
    assert json.loads((out / "team.json").read_text())["source"]["step"] == 1


def test_a_shared_adapter_is_exported_for_every_agent(tiny_model_dir, tmp_path):
    run = trained_run(tiny_model_dir, tmp_path / "run", "discussion.adapters=shared", "train.max_steps=1")
    export_run(run, tmp_path / "out")
    team = json.loads((tmp_path / "out" / "team.json").read_text())
    assert team["shared_adapter"] and {a["adapter"] for a in team["agents"]} == {"shared"}
    files = [(tmp_path / "out" / f"agent_{k}" / "adapter_model.safetensors").read_bytes() for k in range(2)]
    assert files[0] == files[1]
    for name, source in (("run", run), ("export", tmp_path / "out")):
        api.evaluate(source, out=tmp_path / f"eval_{name}")
    same_evaluation(tmp_path / "eval_run", tmp_path / "eval_export")


def test_a_heterogeneous_team_exports_each_agent_against_its_own_base(tiny_model_dir, tiny_llama_dir, tmp_path):
    bases = f"model.agent_models=[{tiny_model_dir},{tiny_llama_dir}]"
    run = trained_run(tiny_model_dir, tmp_path / "run", bases, "train.max_steps=1")
    export_run(run, tmp_path / "out")
    run_cfg, ckpt, _ = checkpoint.resolve(str(run))
    team = checkpoint.load_team(_cfg(run_cfg), ckpt)
    for k, (base, key) in enumerate(((tiny_model_dir, "model0"), (tiny_llama_dir, "model1"))):
        folder = tmp_path / "out" / f"agent_{k}"
        assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base)
        agent = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), folder).eval()
        assert (logprobs(agent) - team_logprobs(team, f"agent{k}", key)).abs().max() < 1e-5


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("maporl: error: "), err
    return err


def test_bad_inputs_are_one_line_errors(run, exported, tiny_model_dir, tmp_path, capsys):
    def refused(*argv: str) -> str:
        assert main(["export", *argv]) == 2
        return error_line(capsys)

    assert "runs/none" in refused("runs/none", "--out", str(tmp_path / "a"))
    assert "model directory, not a maporl run" in refused(str(tiny_model_dir), "--out", str(tmp_path / "a"))
    assert "already an export" in refused(str(exported), "--out", str(tmp_path / "a"))
    assert "--force" in refused(str(run), "--out", str(exported))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    assert "replaces only an export" in refused(str(run), "--out", str(tmp_path / "notes"), "--force")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    assert "overlaps" in refused(str(run), "--out", str(run / "checkpoints"))
    assert "not found" in refused(str(run), "--out", str(tmp_path / "a"), "model.name_or_path=/nowhere/model")
    assert "--push-to-hub" in refused(str(run), "--out", str(tmp_path / "a"), "--private")
    assert not (tmp_path / "a").exists()


def test_force_replaces_an_earlier_export(run, tmp_path, capsys):
    out = tmp_path / "team"
    assert main(["export", str(run), "--out", str(out), "--merge"]) == 0
    assert main(["export", str(run), "--out", str(out), "--force"]) == 0
    assert json.loads((out / "team.json").read_text())["kind"] == "adapters"
    assert not (out / "agent_0" / "model.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["team"]  # no temporary folder left behind
    assert f"maporl eval --checkpoint {out}" in capsys.readouterr().out


def test_training_starts_from_an_export(run, exported, team):
    """train.init_from=EXPORT loads its adapters, as it does a checkpoint's."""
    from maporl.policy import Policy
    from maporl.team import build_team
    from maporl.trainer import _init_checkpoint

    fresh = build_team(_cfg(checkpoint.resolve(str(run))[0]), with_adapters=True)
    checkpoint.load_policy(_init_checkpoint(str(exported)), Policy(fresh, value_heads=False))
    trained, loaded = team.adapter_states(), fresh.adapter_states()
    assert trained.keys() == loaded.keys()
    assert all(torch.equal(trained[a][k], loaded[a][k]) for a in trained for k in trained[a])


def test_the_embedded_base_is_named_by_its_shipped_path(tmp_path):
    """peft and vLLM know no 'embedded': the adapters name the installed copy; maporl keeps the portable name."""
    from maporl.models import EMBEDDED_DIR

    run = trained_run("embedded", tmp_path / "run", "train.max_steps=1", "generation.max_new_tokens=24")
    export_run(run, tmp_path / "out")
    config = json.loads((tmp_path / "out" / "agent_0" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(EMBEDDED_DIR.resolve())
    [base] = json.loads((tmp_path / "out" / "team.json").read_text())["base_models"]
    assert base["name_or_path"] == "embedded" and "EMBEDDED_DIR" in base["note"]
    assert checkpoint.resolve(str(tmp_path / "out"))[0]["model"]["name_or_path"] == "embedded"
    for name, source in (("run", run), ("export", tmp_path / "out")):
        api.evaluate(source, out=tmp_path / f"eval_{name}")
    same_evaluation(tmp_path / "eval_run", tmp_path / "eval_export")
    assert json.loads((tmp_path / "eval_run" / "eval.json").read_text())["parse_rate"] > 0  # real answers compared
