"""The update trains on exactly the tokens the sampler drew: their ids travel in the transcripts, the policy gives
them the sampler's log-probabilities, the first PPO epoch's ratio is exactly 1, and generation stops on every
end-of-turn id of the model."""

from __future__ import annotations

import torch
from conftest import tiny_cfg

from maporl import discussion
from maporl.advantages import compute_advantages
from maporl.episodes import encode_episodes
from maporl.generation import GenRequest, encode_prompt
from maporl.generation.registry import build_generator
from maporl.learner import Learner
from maporl.policy import Policy
from maporl.prompts import first_turn_prompt
from maporl.records import Answer, Problem, TrainBatch, Transcript
from maporl.tasks import get_task
from maporl.team import build_team


def rollout(cfg, team, problems=3):
    task = get_task(cfg.task.name)
    return discussion.run(task.sample(problems, 0, "train"), task, build_generator(cfg, team), cfg.discussion, seed=0)


def test_the_answer_mask_covers_exactly_the_sampled_tokens(tokenizer):
    prompt = ({"role": "user", "content": "What is 1+2-0?"},)
    eos = tokenizer.eos_token_id
    done = (*tokenizer("The answer is 3.", add_special_tokens=False)["input_ids"], eos)
    cut = tuple(tokenizer("The answer is", add_special_tokens=False)["input_ids"])  # never sampled its end of turn
    answers = (Answer(0, 0, prompt, "The answer is 3.", "3", False, done), Answer(1, 0, prompt, "", None, True, cut))
    tr = Transcript(Problem("p", "What is 1+2-0?", "3", "t"), (answers,))
    batch = encode_episodes(tokenizer, [tr], [(0, 0, 0), (0, 1, 0)])
    for row, ids in enumerate([done, cut]):
        # answer_mask[p] marks that token p+1 is scored: exactly the sampled ids, after exactly the prompt's ids.
        assert batch.input_ids[row, 1:][batch.answer_mask[row]].tolist() == list(ids)
        prompt_ids = encode_prompt(tokenizer, prompt)
        start = batch.input_ids.shape[1] - len(ids) - len(prompt_ids)
        assert batch.input_ids[row, start : start + len(prompt_ids)].tolist() == prompt_ids
    assert batch.attention_mask[1, 0] == 0  # the shorter row is left-padded


def test_retokenized_text_is_not_what_was_sampled_but_the_update_trains_on_the_samples(tiny_model_dir):
    cfg = tiny_cfg(tiny_model_dir, "generation.max_new_tokens=12")
    team = build_team(cfg, with_adapters=True)
    transcripts = rollout(cfg, team, problems=6)
    tokenizer = team.tokenizer(0)
    answers = [a for tr in transcripts for turn in tr.answers for a in turn]
    assert all(a.token_ids and len(a.logprobs) == len(a.token_ids) for a in answers)
    # The old path: re-tokenize the decoded text (plus the end of turn). A random model's tokens do not survive it.
    differ = 0
    for a in answers:
        again = tokenizer(a.response, add_special_tokens=False)["input_ids"] + (
            [] if a.truncated else [a.token_ids[-1]]
        )
        differ += again != list(a.token_ids)
    assert differ >= len(answers) // 4, f"only {differ} of {len(answers)} answers fail to round-trip"
    episodes = [(b, i, t) for b in range(len(transcripts)) for i in range(2) for t in range(2)]
    batch = encode_episodes(tokenizer, transcripts, episodes)
    for e, (b, i, t) in enumerate(episodes):
        assert batch.input_ids[e, 1:][batch.answer_mask[e]].tolist() == list(transcripts[b].answers[t][i].token_ids)


def test_policy_logprobs_are_the_samplers_and_the_first_ppo_epoch_ratio_is_exactly_one(tiny_model_dir):
    cfg = tiny_cfg(
        tiny_model_dir, "generation.temperature=0.7", "algo.name=ppo", "algo.micro_batch_size=3", "algo.kl_coef=0.01"
    )
    team = build_team(cfg, with_adapters=True)
    with torch.no_grad():  # adapters that differ from each other and from the base
        for name, p in team.models["base"].named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    policy = Policy(team, value_heads=True, temperature=0.7)
    transcripts = rollout(cfg, team)
    episodes = [(b, i, t) for b in range(len(transcripts)) for i in range(2) for t in range(2)]
    batch = encode_episodes(team.tokenizer(0), transcripts, episodes)
    learner = Learner(policy, cfg.algo, [0, 1], total_steps=1, seed=0)
    old_logp, old_values, ref_logp = learner.old_policy(batch)
    # Async rollouts bring the sampler's log-probabilities: the learner then makes only V_old and log π_ref.
    no_logp, values, ref = learner.old_policy(batch, behaviour_logp=False)
    assert no_logp is None
    torch.testing.assert_close(values, old_values, atol=0, rtol=0)
    torch.testing.assert_close(ref, ref_logp, atol=0, rtol=0)
    for e, (b, i, t) in enumerate(episodes):
        sampled = torch.tensor(transcripts[b].answers[t][i].logprobs)
        torch.testing.assert_close(old_logp[e][batch.answer_mask[e]], sampled, atol=1e-5, rtol=0)
    rewards = torch.rand(len(transcripts), 2, 2)
    advantages, returns = compute_advantages(cfg.algo, rewards, batch, old_logp, old_values, ref_logp)
    stats = learner.update(TrainBatch(batch, advantages, returns, old_logp, old_values, ref_logp))
    assert stats["ratio_mean"] == 1.0 and stats["clip_frac"] == 0.0  # one epoch, one minibatch: nothing moved yet


def test_async_multi_epoch_grpo_makes_no_old_policy_forward(tiny_model_dir):
    cfg = tiny_cfg(tiny_model_dir, "algo.epochs=2", "algo.kl_coef=0")
    team = build_team(cfg, with_adapters=True)
    transcripts = rollout(cfg, team)
    episodes = [(b, i, 0) for b in range(len(transcripts)) for i in range(2)]
    batch = encode_episodes(team.tokenizer(0), transcripts, episodes)
    policy = Policy(team, value_heads=False)
    learner = Learner(policy, cfg.algo, [0, 1], total_steps=1, seed=0)
    assert learner.old_policy(batch)[0] is not None  # two epochs: the second compares against π_old
    forwards = []
    policy.forward = lambda *args, real=policy.forward: forwards.append(1) or real(*args)
    assert learner.old_policy(batch, behaviour_logp=False) == (None, None, None) and not forwards


def test_generation_stops_on_every_end_of_turn_id_of_the_model(tiny_model_dir):
    cfg = tiny_cfg(tiny_model_dir, "generation.temperature=0", "generation.max_new_tokens=6")
    team = build_team(cfg, with_adapters=False)
    requests = [GenRequest(first_turn_prompt("What is 2+2-1?"), 0, 1)]
    (free,) = build_generator(cfg, team).generate(requests)
    assert free.truncated and len(free.token_ids) == 6  # greedy, a random model never ends its turn
    model = team.models["base"]
    stop = free.token_ids[2]
    model.generation_config.eos_token_id = [team.tokenizer(0).eos_token_id, stop]  # a second end-of-turn id
    (stopped,) = build_generator(cfg, team).generate(requests)
    assert not stopped.truncated and stopped.token_ids == free.token_ids[: free.token_ids.index(stop) + 1]
