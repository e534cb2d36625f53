"""The memory options of the update (activation checkpointing, bf16 autocast, micro-batches packed to a token
budget) change how the gradient is computed, not what it is: each is compared with the plain path on CPU."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_cfg

from maporl import discussion
from maporl.advantages import compute_advantages
from maporl.episodes import encode_episodes
from maporl.generation.registry import build_generator
from maporl.learner import Learner
from maporl.policy import Policy
from maporl.records import TrainBatch
from maporl.tasks import get_task
from maporl.team import build_team

COMMON = ("algo.name=ppo", "algo.kl_coef=0.01", "algo.max_grad_norm=1e9", "algo.micro_batch_size=4")


@pytest.fixture(scope="module")
def transcripts(tiny_model_dir):
    cfg = tiny_cfg(tiny_model_dir, "generation.max_new_tokens=10", *COMMON)
    task = get_task(cfg.task.name)
    generator = build_generator(cfg, build_team(cfg, with_adapters=False))
    return discussion.run(task.sample(6, 0, "train"), task, generator, cfg.discussion, seed=0)


def gradient(model_dir, transcripts, *options: str) -> dict[str, torch.Tensor]:
    """Every trained parameter's gradient after one PPO update (no clipping) of two agents on the same answers, and
    under "layer0_calls" how often the first decoder layer's MLP ran in the update."""
    cfg = tiny_cfg(model_dir, *COMMON, *options)
    torch.manual_seed(0)
    team = build_team(cfg, with_adapters=True)
    with torch.no_grad():  # adapters that differ from the base, so every LoRA tensor gets a gradient
        for name, p in team.models["base"].named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    m = cfg.model
    policy = Policy(team, True, autocast=m.autocast, activation_checkpointing=m.activation_checkpointing)
    with torch.no_grad():
        for head in policy.value_heads:
            head.weight.normal_(0, 0.1)
    episodes = [(b, i, t) for b in range(len(transcripts)) for i in range(2) for t in range(2)]
    batch = encode_episodes(team.tokenizer(0), transcripts, episodes)
    learner = Learner(policy, cfg.algo, [0, 1], total_steps=1, seed=0)
    old_logp, old_values, ref_logp = learner.old_policy(batch)
    rewards = torch.linspace(-1, 1, len(transcripts) * 4).reshape(len(transcripts), 2, 2)
    advantages, returns = compute_advantages(cfg.algo, rewards, batch, old_logp, old_values, ref_logp)
    calls = []
    # Counted in forward itself: module hooks do not run again when a checkpointed layer is recomputed.
    mlp = team.models["base"].get_base_model().model.layers[0].mlp
    mlp.forward = lambda *args, real=mlp.forward: calls.append(1) or real(*args)
    learner.update(TrainBatch(batch, advantages, returns, old_logp, old_values, ref_logp))
    params = [p for a in (0, 1) for p in policy.agent_parameters(a)]
    names = {id(p): n for n, p in team.models["base"].named_parameters()}
    grads = {names.get(id(p), f"value{k}"): p.grad.detach().clone() for k, p in enumerate(params)}
    return grads | {"layer0_calls": torch.tensor(len(calls))}


@pytest.fixture(scope="module")
def plain(tiny_model_dir, transcripts):
    return gradient(tiny_model_dir, transcripts)


def test_the_plain_gradient_reaches_every_trained_tensor(plain):
    assert len(plain) > 20 and all(g.abs().sum() > 0 for n, g in plain.items() if n != "layer0_calls")


def test_activation_checkpointing_recomputes_the_layers_in_the_backward_pass(tiny_model_dir, transcripts, plain):
    got = gradient(tiny_model_dir, transcripts, "model.activation_checkpointing=true")
    assert got["layer0_calls"] == 2 * plain["layer0_calls"]  # each micro-batch's forward, then its recomputation


@pytest.mark.parametrize(
    "options",
    [
        ("model.activation_checkpointing=true",),
        ("algo.micro_batch_tokens=120",),  # 1 to 4 rows per micro-batch, by length
    ],
)
def test_exact_options_leave_the_gradient_as_it_is(tiny_model_dir, transcripts, plain, options):
    got = gradient(tiny_model_dir, transcripts, *options)
    assert got.keys() == plain.keys()
    for name, g in plain.items():  # float summation order only
        if name != "layer0_calls":
            torch.testing.assert_close(got[name], g, rtol=1e-4, atol=1e-7, msg=name)


@pytest.mark.parametrize(
    "options",
    [
        ("model.autocast=true",),
        ("model.autocast=true", "model.activation_checkpointing=true", "algo.micro_batch_tokens=120"),
    ],
)
def test_bf16_autocast_keeps_the_gradient_within_bf16_precision(tiny_model_dir, transcripts, plain, options):
    got = gradient(tiny_model_dir, transcripts, *options)
    flat_plain = torch.cat([g.flatten() for n, g in plain.items() if n != "layer0_calls"])
    flat_got = torch.cat([got[n].flatten() for n in plain if n != "layer0_calls"])
    # bf16 keeps 8 bits of mantissa (~0.4% per op): the whole gradient stays within a few percent, same direction.
    assert torch.nn.functional.cosine_similarity(flat_got, flat_plain, dim=0) > 0.999
    assert (flat_got - flat_plain).norm() / flat_plain.norm() < 0.05


def test_generation_keeps_its_kv_cache_with_activation_checkpointing(tiny_model_dir):
    """The checkpointed layers are in training mode only inside the update's forward: transformers before 5.24
    drops a training-mode layer's KV cache even without gradients, and generation then sees only the newest token."""
    from maporl.generation import GenRequest
    from maporl.policy import policy_for
    from maporl.prompts import first_turn_prompt

    requests = [GenRequest(first_turn_prompt(f"What is {k}+5-2?"), agent=k % 2, seed=k) for k in range(6)]
    answers = {}
    for option in ("false", "true"):
        cfg = tiny_cfg(tiny_model_dir, f"model.activation_checkpointing={option}", "generation.max_new_tokens=12")
        team = build_team(cfg, with_adapters=True)
        policy = policy_for(cfg, team)
        assert len(policy.checkpointed) == (2 if option == "true" else 0)  # the tiny model's decoder layers
        answers[option] = build_generator(cfg, team).generate(requests)
    assert answers["true"] == answers["false"]
