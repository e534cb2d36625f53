"""From transcripts to token batches: each trained episode (one agent's answer at one turn) as the prompt the agent
saw followed by exactly the tokens it sampled, and the sampler's own log-probabilities of them."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from maporl.generation import encode_prompt
from maporl.records import EpisodeBatch, Transcript


def encode_episodes(
    tokenizers, transcripts: Sequence[Transcript], episodes: Sequence[tuple[int, int, int]]
) -> EpisodeBatch:
    """Token ids of (problem b, agent i, turn t) episodes: the prompt the agent saw, then exactly the tokens it
    sampled (with the end-of-turn token when it sampled one; a cut-off answer has none). The answer's text is never
    re-tokenized: decode -> encode does not give the sampled ids back (merges across tokens, normalisation), and a
    PPO ratio over other tokens than the sampled ones is biased.

    `tokenizers`: one tokenizer for every agent, or a list indexed by agent (heterogeneous teams).
    """
    rows, answer_lens, pads = [], [], []
    for b, i, t in episodes:
        tokenizer = tokenizers[i] if isinstance(tokenizers, (list, tuple)) else tokenizers
        answer = transcripts[b].answers[t][i]
        if not answer.token_ids:
            raise ValueError(f"agent {i}'s answer at turn {t} has no sampled token ids: train only on fresh rollouts")
        rows.append(encode_prompt(tokenizer, answer.prompt) + list(answer.token_ids))
        answer_lens.append(len(answer.token_ids))
        pads.append(tokenizer.pad_token_id)
    width = max((len(r) for r in rows), default=1)
    ids = torch.tensor(pads, dtype=torch.long)[:, None].repeat(1, width) if rows else torch.zeros(0, 1).long()
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    answer_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for e, (row, n) in enumerate(zip(rows, answer_lens, strict=True)):
        ids[e, width - len(row) :] = torch.tensor(row)
        attn[e, width - len(row) :] = 1
        answer_mask[e, width - n :] = True
    index = torch.tensor(episodes, dtype=torch.long).reshape(-1, 3)
    return EpisodeBatch(
        ids,
        attn,
        answer_mask[:, 1:],
        index[:, 1],
        index[:, 2],
        index[:, 0],
    )


def sampled_logprobs(
    transcripts: Sequence[Transcript], episodes: Sequence[tuple[int, int, int]], batch: EpisodeBatch
) -> torch.Tensor:
    """(E, L-1): the sampler's log-probability of every answer token at the position that scores it (0 elsewhere),
    for `encode_episodes(..., episodes)`'s rows: the behaviour policy of an off-policy (asynchronous) rollout."""
    out = torch.zeros(batch.answer_mask.shape)
    for e, (b, i, t) in enumerate(episodes):
        out[e, batch.answer_mask[e]] = torch.tensor(transcripts[b].answers[t][i].logprobs, dtype=torch.float32)
    return out
