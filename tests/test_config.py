"""Config loading, dotted overrides and one-line fix-it errors."""

from __future__ import annotations

import pytest

from maporl.config import Config, dump_yaml, keys, load_config
from maporl.errors import UsageError


def test_defaults_and_overrides():
    cfg = load_config(None, ["discussion.num_agents=4", "generation.temperature=0.7", "task.name=arith_word"])
    assert cfg.discussion.num_agents == 4 and cfg.discussion.turns == Config().discussion.turns
    assert cfg.generation.temperature == 0.7 and cfg.task.name == "arith_word"
    assert load_config() == Config()


def test_scientific_notation_is_a_float():
    # YAML 1.1 (PyYAML) reads 1e-3 as a string; it is the way people write learning rates.
    cfg = load_config(None, ["algo.lr=1e-3", "algo.max_grad_norm=1E+2", "reward.alpha=[5e-1,2]"])
    assert (cfg.algo.lr, cfg.algo.max_grad_norm, cfg.reward.alpha) == (1e-3, 100.0, (0.5, 2.0))
    with pytest.raises(UsageError, match="should be float"):
        load_config(None, ["algo.lr=1e-3x"])


def test_yaml_file_then_overrides_win(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("discussion:\n  num_agents: 2\n  turns: 4\nseed: 5\n")
    cfg = load_config(path, ["discussion.turns=2"])
    assert (cfg.discussion.num_agents, cfg.discussion.turns, cfg.seed) == (2, 2, 5)


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["discussion.peers_shown=1", "model.device=cpu"])
    path = tmp_path / "saved.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_config(path) == cfg


def test_shipped_tiny_config_validates():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert load_config(root / "configs" / "tiny.yaml") == load_config() == load_config("tiny")


def test_an_unknown_config_name_lists_the_shipped_recipes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="not found; .* shipped recipe: paper_anli, paper_gsm8k, tiny"):
        load_config("paper_gsm9k")
    with pytest.raises(UsageError, match="config file nowhere/x.yaml not found"):
        load_config("nowhere/x.yaml")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("discussion.num_agnets=3", "did you mean 'num_agents'"),
        ("discusion.turns=3", "did you mean 'discussion'"),
        ("discussion.turns=abc", "should be int"),
        ("discussion.turns=0", "discussion.turns must be >= 1"),
        ("discussion.num_agents=0", "discussion.num_agents must be >= 1"),
        ("discussion.adapters=shard", "did you mean 'shared'"),
        ("generation.temperature=-1", "temperature must be >= 0"),
        ("generation.temperature=true", "should be float"),
        ("eval.num_problems=0", "eval.num_problems must be >= 1"),
        ("model=3", "is a section"),
        ("num_agents", "not of the form section.key=value"),
        ("run_name=a/b", "without '/'"),
        ("train.async_rollout=true", "it needs backend=ray"),
        ("ray.gpus_per_learner=-1", "ray.gpus_per_learner >= 0"),
        ("generation.merge_adapters=sometimes", "choose one of: auto, always, never"),
        ("generation.backend=vlm", "(did you mean 'vllm'?); choose one of: hf, vllm"),
    ],
)
def test_bad_values_give_one_line_fix_it_errors(override, expected):
    with pytest.raises(UsageError) as e:
        load_config(None, [override])
    assert expected in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_files(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("discussion: [1, 2\n")
    with pytest.raises(UsageError, match="invalid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(UsageError, match="top level must be a mapping"):
        load_config(listy)


def test_every_field_has_help():
    from maporl.study.settings import study_keys

    rows = [*keys(), *study_keys()]
    assert len(rows) > 10
    assert all(help_text for _, _, help_text in rows)
    names = {key for key, _, _ in rows}
    assert {"verifier_train.lr", "reproduce.seeds", "train.report_to"} <= names  # every command's settings


def test_a_run_config_carries_no_reproduce_settings():
    """`maporl reproduce`'s settings are the study's, not a training run's: not in the saved config.yaml, refused in
    a run's overrides."""
    assert "reproduce" not in dump_yaml(Config())
    with pytest.raises(UsageError, match="unknown config key 'reproduce'"):
        load_config(None, ["reproduce.budget_min=3"])


def test_reproduce_settings_from_the_same_yaml_and_overrides(tmp_path):
    from maporl.study.settings import load_study

    run = tmp_path / "run.yaml"
    run.write_text("discussion:\n  turns: 2\n")
    path = tmp_path / "study.yaml"
    path.write_text(run.read_text() + "reproduce:\n  budget_min: 30\n  seeds: [0, 1]\n")
    cfg, study = load_study(path, ["reproduce.methods=[untrained,maporl]", "discussion.num_agents=2"])
    assert cfg == load_config(run, ["discussion.num_agents=2"]) and cfg.discussion.turns == 2
    assert (study.budget_min, study.seeds, study.methods) == (30.0, (0, 1), ("untrained", "maporl"))


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "reproduce.methods=[maporl,mapor_wide]",
            "reproduce.methods='mapor_wide' is not allowed (did you mean 'maporl_wide'?); choose one of: untrained,",
        ),
        ("reproduce.budget_min=0", "reproduce.budget_min must be > 0 minutes, e.g. --budget-min 5"),
        ("reproduce.seeds=[]", "reproduce.seeds must name at least one seed"),
        ("reproduce.solo_warmup_share=1", "reproduce.solo_warmup_share must be between 0 and 1"),
        ("reproduce.budget_mins=3", "did you mean 'budget_min'"),
        ("reproduce=3", "'reproduce' is a section"),
        ("reproduce.seeds=x", "reproduce.seeds must be a list"),
    ],
)
def test_bad_reproduce_settings_give_one_line_fix_it_errors(override, expected):
    from maporl.study.settings import load_study

    with pytest.raises(UsageError) as e:
        load_study(None, [override])
    assert expected in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["paper_gsm8k", "paper_anli", "paper_gsm8k.yaml", "configs/paper_gsm8k.yaml"])
def test_paper_configs_validate(name, monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).parent.parent)  # a shipped recipe by name, or by its path in a clone
    cfg = load_config(name)
    assert cfg.algo.name == "ppo" and cfg.discussion.num_agents == 2 and cfg.discussion.turns == 3
    assert cfg.reward.gamma == 0.3 and cfg.algo.lora_rank == 8 and cfg.generation.temperature == 0.7
    assert cfg.task.name == name.split("paper_")[1].removesuffix(".yaml")


def test_loading_on_a_base_leaves_the_callers_dict_alone():
    """A run's saved config is the base of `maporl eval --checkpoint RUN`; overrides must not write into it (the
    shared-seat rule reads the run's own num_agents from it afterwards)."""
    base = {"discussion": {"num_agents": 1, "turns": 1}}
    cfg = load_config(None, ["discussion.num_agents=3"], base=base)
    assert cfg.discussion.num_agents == 3 and base == {"discussion": {"num_agents": 1, "turns": 1}}
