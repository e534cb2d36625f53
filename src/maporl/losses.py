"""Losses: pure functions on token tensors (torch only), in the style of verl's ``core_algos``.

`policy_loss` is PPO's clipped surrogate, `value_loss` the clipped value regression, `kl_penalty` the per-token KL
estimators to the reference policy, and `aggregate` turns an (R, L) per-token loss matrix into a scalar. Rows are
episodes (one agent's answer at one turn), columns tokens; a mask is 1 (or True) on the answer tokens.

Token aggregation (`agg`, `AGGREGATIONS`) decides how much each token weighs, and so carries a length bias:

- ``"token_mean"`` (DAPO, verl's default): sum over every valid token of the batch / number of valid tokens. Every
  token weighs the same, so a long answer contributes in proportion to its length; no per-answer normalisation means
  no incentive to lengthen wrong answers or shorten right ones. The scale depends on the batch: with gradient
  accumulation, micro-batch token means are not the global token mean unless the caller reweights.
- ``"seq_mean_token_mean"`` (original GRPO, PPO in TRL): each answer's token mean, then the mean over answers. Every
  answer weighs the same, so a token of a short answer weighs more than a token of a long one: with a negative
  advantage a long wrong answer is pushed down less per token, which is known to grow wrong answers (Dr. GRPO).
- ``"seq_mean_token_sum"`` (Dr. GRPO up to a constant): each answer's token sum, then the mean over answers. Every
  token weighs the same within and across answers (no length normalisation), but the loss scale grows with answer
  length, so the learning rate must suit the typical length.

Rows with no valid token (padding rows) are left out of the two "seq_mean" means. An empty mask gives loss 0.

Non-finite values at *valid* positions are not hidden: the functions just compute, and the caller (the learner's NaN
guard) decides. Values at masked-out positions are never read — they are replaced with `torch.where` before any
arithmetic that could spread them — so padding garbage (even NaN/inf) changes neither the loss nor its gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum")
KL_ESTIMATORS = ("k1", "k2", "k3")


def aggregate(loss_mat: Tensor, mask: Tensor, agg: str) -> Tensor:
    """Reduce an (R, L) per-token loss matrix to a scalar over the valid tokens.

    Masked-out entries are replaced, not multiplied, so they cannot make the *value* non-finite. They can still make
    the *gradient* NaN if `loss_mat` was computed from NaN with a non-linear op (0 · NaN = NaN backwards): mask the
    inputs first, as `policy_loss`, `value_loss` and `kl_penalty(mask=...)` do.

    Args:
        loss_mat: (R, L) per-token losses.
        mask: (R, L) 1 on valid tokens.
        agg: One of `AGGREGATIONS` (see the module docstring for what each weighs).

    Returns:
        0-d loss tensor.

    Raises:
        ValueError: unknown `agg`.
    """
    mask = mask.bool()
    values = torch.where(mask, loss_mat, torch.zeros_like(loss_mat))
    if agg == "token_mean":
        return values.sum() / mask.sum().clamp(min=1)
    if agg not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {agg!r}; valid: {', '.join(AGGREGATIONS)}")
    tokens = mask.sum(dim=1)
    row_loss = values.sum(dim=1)
    if agg == "seq_mean_token_mean":
        row_loss = row_loss / tokens.clamp(min=1)
    rows = tokens > 0
    return torch.where(rows, row_loss, torch.zeros_like(row_loss)).sum() / rows.sum().clamp(min=1)


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_eps: float = 0.2,
    agg: str = "token_mean",
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate ``max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε))`` with ρ = π/π_old per token.

    The pessimistic max means a token whose ratio has already moved past the clip range in the direction its
    advantage favours gets no gradient; every other token gets the plain −A·ρ gradient.

    Args:
        logprobs: (R, L) log π(token) under the current policy (differentiable).
        old_logprobs: (R, L) log π_old(token) at sampling time.
        advantages: (R, L) token advantages (GAE) or (R,) one per episode (group relative), broadcast over its row.
        mask: (R, L) 1 on the tokens to train.
        clip_eps: ε of the clip range.
        agg: Token aggregation, one of `AGGREGATIONS`.

    Returns:
        (loss, stats). `stats` holds detached 0-d tensors averaged over valid tokens: ``clip_frac`` (fraction of
        tokens where the clipped term is the active, strictly larger one, i.e. that get no gradient),
        ``approx_kl`` (the k3 estimator ``(ρ − 1) − log ρ`` of KL(π_old ‖ π): ≥ 0 per token and unbiased under
        samples from π_old) and ``ratio_mean``.
    """
    mask = mask.bool()
    if advantages.dim() == 1:
        advantages = advantages[:, None].expand_as(logprobs)
    zeros = torch.zeros_like(logprobs)
    log_ratio = torch.where(mask, logprobs - old_logprobs, zeros)
    advantages = torch.where(mask, advantages, zeros)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = aggregate(torch.maximum(unclipped, clipped), mask, agg)
    with torch.no_grad():
        stats = {
            "clip_frac": aggregate((clipped > unclipped).to(logprobs.dtype), mask, "token_mean"),
            "approx_kl": aggregate((ratio - 1) - log_ratio, mask, "token_mean"),
            "ratio_mean": aggregate(ratio, mask, "token_mean"),
        }
    return loss, stats


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip_eps: float = 0.2,
    agg: str = "token_mean",
) -> Tensor:
    """Clipped value loss ``0.5·max((V − G)², (clip(V, V_old ± ε) − G)²)`` (PPO2 / released MAPoRL code).

    Args:
        values: (R, L) current value predictions (differentiable).
        old_values: (R, L) value predictions at sampling time.
        returns: (R, L) regression targets G (from `maporl.advantages.gae`).
        mask: (R, L) 1 on the tokens to train.
        clip_eps: How far V may move from V_old before the clipped term takes over.
        agg: Token aggregation, one of `AGGREGATIONS`.

    Returns:
        0-d loss tensor.
    """
    mask = mask.bool()
    zeros = torch.zeros_like(values)
    values = torch.where(mask, values, zeros)
    old_values = torch.where(mask, old_values, zeros)
    returns = torch.where(mask, returns, zeros)
    clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
    loss_mat = 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return aggregate(loss_mat, mask, agg)


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, kind: str = "k3", mask: Tensor | None = None) -> Tensor:
    """Per-token estimators of KL(π ‖ π_ref) from samples of π (Schulman, "Approximating KL divergence").

    With x = log π_ref − log π on a token sampled from π:
    ``k1 = −x`` (unbiased, high variance, can be negative), ``k2 = x²/2`` (biased, low variance, ≥ 0),
    ``k3 = eˣ − x − 1`` (unbiased, low variance, ≥ 0).

    Args:
        logprobs: (R, L) log π(token).
        ref_logprobs: (R, L) log π_ref(token).
        kind: One of `KL_ESTIMATORS`.
        mask: (R, L) 1 on valid tokens. When given, masked-out positions are zeroed *before* the estimator, so
            garbage there cannot reach the gradient: a `torch.where` after ``exp`` (as in `aggregate`) stops a NaN
            value but not a NaN gradient (0 · NaN = NaN in the backward pass).

    Returns:
        (R, L) per-token estimates; 0 at masked-out positions when `mask` is given.

    Raises:
        ValueError: unknown `kind`.
    """
    log_ratio = ref_logprobs - logprobs
    if mask is not None:
        log_ratio = torch.where(mask.bool(), log_ratio, torch.zeros_like(log_ratio))
    if kind == "k1":
        return -log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        return torch.exp(log_ratio) - log_ratio - 1
    raise ValueError(f"unknown KL estimator {kind!r}; valid: {', '.join(KL_ESTIMATORS)}")
