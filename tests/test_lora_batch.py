"""The sliced mixed-adapter forward computes exactly what peft's gather/scatter one does, forward and backward."""

from __future__ import annotations

import warnings

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from maporl import lora_batch


def test_runs_hand_cases():
    assert lora_batch.runs(()) == ()
    assert lora_batch.runs(("a",)) == ((0, 1, "a"),)
    assert lora_batch.runs(("a", "a", "b", "__base__", "__base__")) == ((0, 2, "a"), (2, 3, "b"), (3, 5, "__base__"))
    assert lora_batch.runs(("a", "b", "a")) == ((0, 1, "a"), (1, 2, "b"), (2, 3, "a"))


def _team(tiny_model_dir, fast: bool):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0)
    peft_model = get_peft_model(model, config, adapter_name="a0")
    peft_model.add_adapter("a1", config)
    peft_model.eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:  # a fresh LoRA is the identity: give the adapters something to do
                p.normal_(0, 0.05)
    for name, p in peft_model.named_parameters():
        p.requires_grad_("lora_" in name)
    if fast:
        assert lora_batch.install(peft_model) > 0
    return peft_model


def _forward_backward(model, names: list[str]):
    torch.manual_seed(2)
    ids = torch.randint(5, 300, (len(names), 9))
    attn = torch.ones_like(ids)
    attn[1, :3] = 0  # left padding on one row
    logits = model(input_ids=ids, attention_mask=attn, adapter_names=names).logits
    if logits.requires_grad:  # all "__base__" rows: no adapter in the graph
        (logits.log_softmax(-1)[..., 7].sum() + logits.square().mean()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), grads


def test_sliced_forward_matches_peft_forward_and_gradients(tiny_model_dir):
    for names in (
        ["a0", "a0", "a1", "a1", "__base__"],  # contiguous: the sliced path
        ["a1", "a1", "a1", "a1", "a1"],  # one adapter
        ["__base__", "__base__", "__base__", "__base__", "__base__"],  # the reference policy
        ["a0", "a1", "a0", "__base__", "a1"],  # interleaved: peft's own path
    ):
        ref_logits, ref_grads = _forward_backward(_team(tiny_model_dir, fast=False), names)
        logits, grads = _forward_backward(_team(tiny_model_dir, fast=True), names)
        torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-6)
        assert grads.keys() == ref_grads.keys()
        for k in grads:
            torch.testing.assert_close(grads[k], ref_grads[k], rtol=1e-4, atol=1e-7)
        if "a0" not in names:  # an adapter with no rows gets no gradient in either path
            assert not any(".a0." in k and g.abs().sum() > 0 for k, g in grads.items())


def test_install_is_idempotent_and_per_instance(tiny_model_dir):
    fast, plain = _team(tiny_model_dir, fast=True), _team(tiny_model_dir, fast=False)
    layers = lora_batch.install(fast)
    assert layers == lora_batch.install(fast)  # a second install wraps nothing twice
    patched = [m for m in fast.modules() if hasattr(m, lora_batch._PEFT_MIXED)]
    assert len(patched) == layers
    assert not any(hasattr(m, lora_batch._PEFT_MIXED) for m in plain.modules())


def test_merged_layers_compute_the_mixed_forward(tiny_model_dir):
    """Inference from merged weights equals peft's mixed forward for every layout it serves, and the LoRA layers
    are back afterwards (also after an error inside)."""
    model = _team(tiny_model_dir, fast=True)
    for names in (
        ["a0", "a0", "a1", "a1", "__base__", "__base__"],  # equal runs: one batched matmul
        ["a0", "a1", "a1", "a1", "__base__", "__base__"],  # unequal runs
        ["a1"] * 6,  # one adapter
    ):
        ref, _ = _forward_backward(model, names)
        with torch.no_grad(), lora_batch.merged(model, names):
            assert not any(type(m).__name__ == "Linear" and hasattr(m, "lora_A") for m in model.modules())
            torch.manual_seed(2)
            ids = torch.randint(5, 300, (len(names), 9))
            attn = torch.ones_like(ids)
            attn[1, :3] = 0
            logits = model(input_ids=ids, attention_mask=attn).logits
        torch.testing.assert_close(logits, ref, rtol=1e-4, atol=1e-5)
        model.zero_grad(set_to_none=True)
    layers = sum(1 for m in model.modules() if hasattr(m, lora_batch._PEFT_MIXED))
    try:
        with lora_batch.merged(model, ["a0"] * 6):
            raise RuntimeError("inside")
    except RuntimeError:
        pass
    assert sum(1 for m in model.modules() if hasattr(m, lora_batch._PEFT_MIXED)) == layers
    assert not any(isinstance(m, lora_batch.MergedLinear) for m in model.modules())


def test_merged_size_counts_one_weight_copy_per_adapter(tiny_model_dir):
    model = _team(tiny_model_dir, fast=True)
    linear = sum(m.base_layer.weight.numel() for m in model.modules() if hasattr(m, lora_batch._PEFT_MIXED))
    assert lora_batch.merged_size(model, 3) == 3 * linear > 0


def test_only_plain_lora_linears_merge(tiny_model_dir):
    model = _team(tiny_model_dir, fast=True)
    assert lora_batch.mergeable(model, ["a0", "a1", "__base__"])
    torch.manual_seed(0)
    dora = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=4, target_modules="all-linear", use_dora=True),
        adapter_name="d",
    )
    assert not lora_batch.mergeable(dora, ["d"])  # DoRA is not W + s·B·A
    with warnings.catch_warnings():  # peft warns that the tied embedding is adapted: that is the case tested
        warnings.simplefilter("ignore", UserWarning)
        embed = get_peft_model(
            AutoModelForCausalLM.from_pretrained(tiny_model_dir),
            LoraConfig(r=4, target_modules=["q_proj", "embed_tokens"]),
            adapter_name="e",
        )
    assert not lora_batch.mergeable(embed, ["e"])  # the embedding layer would not see per-row adapters
