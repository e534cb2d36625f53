"""A faster forward for peft's mixed-adapter batches (`adapter_names`), where rows come grouped by adapter.

peft's `_mixed_batch_forward` gathers every adapter's rows with a Python index list and scatters the LoRA output
back with an in-place indexed add, in every LoRA layer. Both copies show up again in the backward pass, which made
the mixed forward+backward of a co-training update about half of its time on the tiny model (profile in
docs/performance.md). When the rows of each adapter are contiguous (our callers sort them so), each adapter's
rows are a slice (a view, free in the backward pass) and the deltas are joined with one `torch.cat`.

The result is the same function: any batch that is not in contiguous runs, or that uses a LoRA variant (DoRA,
aLoRA), goes through peft's own code.

`routing(model, names)` is how the update chooses each row's adapter. peft's own way (`adapter_names=` on the
forward) attaches the names with hooks that live for that forward call only, so activation checkpointing, which runs
each layer again in the backward pass, would recompute every row with the model's active adapter instead of its own.
The routing here stays set until its context closes, which the learner does after the backward pass.
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import torch
from peft.tuners.lora.layer import Linear as LoraLinear
from peft.tuners.tuners_utils import BaseTunerLayer

_PEFT_MIXED = "_maporl_peft_mixed_batch_forward"


@lru_cache(maxsize=256)
def runs(names: tuple[str, ...]) -> tuple[tuple[int, int, str], ...]:
    """Maximal runs of equal names: ((start, end, name), ...)."""
    out, start = [], 0
    for k in range(1, len(names) + 1):
        if k == len(names) or names[k] != names[start]:
            out.append((start, k, names[start]))
            start = k
    return tuple(out)


def _sliced_mixed_batch_forward(self, x: torch.Tensor, *args: Any, adapter_names: list[str], **kwargs: Any):
    spans = runs(tuple(adapter_names))
    names = {name for *_, name in spans}
    if len(spans) > len(names) or any(n in self.lora_variant for n in names) or kwargs.get("alora_offsets"):
        return getattr(self, _PEFT_MIXED)(x, *args, adapter_names=adapter_names, **kwargs)
    kwargs = {k: v for k, v in kwargs.items() if k != "alora_offsets"}
    result = self.base_layer(x, *args, **kwargs)
    deltas: list[torch.Tensor | None] = []
    # Under autocast the matmuls cast their inputs themselves: a cast to the adapters' fp32 here would only copy x.
    autocast = torch.is_autocast_enabled(x.device.type)
    for start, end, name in spans:
        if name == "__base__" or name not in self.lora_A.keys():
            deltas.append(None)
            continue
        part = x[start:end] if autocast else x[start:end].to(self.lora_A[name].weight.dtype)
        # Scaling the rank-r activations, not the output, saves an elementwise pass over the widest tensor.
        lora = self.lora_B[name](self.lora_A[name](self.lora_dropout[name](part)) * self.scaling[name])
        deltas.append(lora.to(result.dtype))
    if all(d is None for d in deltas):
        return result
    if len(deltas) == 1:
        return result + deltas[0]
    # One concatenation beats adding into slices of `result` in place (1.3x forward+backward, measured).
    full = [
        d if d is not None else result.new_zeros((end - start, *result.shape[1:]))
        for d, (start, end, _) in zip(deltas, spans, strict=True)
    ]
    return result + torch.cat(full)


class Routing:
    """The adapter of each row of the forward in progress, read by every LoRA layer of one model (None: no routing,
    the layer behaves as peft made it)."""

    def __init__(self) -> None:
        self.names: tuple[str, ...] | None = None

    def pre_forward(self, module, args, kwargs):
        if self.names is not None:
            kwargs["adapter_names"] = list(self.names)
        return args, kwargs


_ROUTING = "_maporl_routing"


class MergedLinear(torch.nn.Module):
    """A LoRA layer for inference with each adapter merged into its own copy of the weight (W + s·B·A), for a batch
    whose rows come in fixed runs of adapters: each run is then one plain matmul, what the base layer alone costs,
    and no peft code runs. Equal runs go through one batched matmul."""

    def __init__(self, layer: LoraLinear, spans: tuple[tuple[int, int, str], ...]):
        super().__init__()
        base = layer.base_layer
        weights = []
        for *_, name in spans:
            w = base.weight
            if name in layer.lora_A.keys():
                a, b = layer.lora_A[name].weight, layer.lora_B[name].weight
                w = w + (b @ a * layer.scaling[name]).to(w.dtype)
            weights.append(w)
        self.spans, self.bias = spans, base.bias
        self.stacked = torch.stack(weights)  # (runs, out, in)
        self.equal = len({end - start for start, end, _ in spans}) == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.spans) == 1:
            return torch.nn.functional.linear(x, self.stacked[0], self.bias)
        if self.equal:  # one batched matmul over (run, rows of the run)
            out = torch.bmm(x.reshape(len(self.spans), -1, x.shape[-1]), self.stacked.transpose(1, 2))
            out = out.reshape(*x.shape[:-1], -1)
            return out if self.bias is None else out + self.bias
        parts = [torch.nn.functional.linear(x[start:end], w, self.bias) for (start, end, _), w in zip(
            self.spans, self.stacked, strict=True)]  # fmt: skip
        return torch.cat(parts)


def mergeable(model: torch.nn.Module, adapter_names: Sequence[str]) -> bool:
    """Can `merged` serve these adapters? Only plain LoRA linear layers merge: a LoRA variant (DoRA) is not W + s·B·A,
    and any other adapted layer (an embedding, a quantised linear) would see no per-row adapter names."""
    names = set(adapter_names)
    for m in model.modules():
        if type(m) is LoraLinear:
            if names & set(m.lora_variant):
                return False
        elif isinstance(m, BaseTunerLayer):
            return False
    return True


def merged_size(model: torch.nn.Module, adapters: int) -> int:
    """Parameters the merged copies of `adapters` adapters would take in `model`'s LoRA layers."""
    return adapters * sum(m.base_layer.weight.numel() for m in model.modules() if type(m) is LoraLinear)


@contextmanager
def merged(model: torch.nn.Module, adapter_names: Sequence[str]) -> Iterator[None]:
    """While open, `model` runs with every LoRA layer replaced by a `MergedLinear` for rows whose adapters are
    `adapter_names` ("__base__": none); its rows must come in runs of one adapter (a forward of another batch size
    fails). Inference only: no gradient reaches the adapters. The layers are put back on exit."""
    spans = runs(tuple(adapter_names))
    swapped = []
    with torch.no_grad():
        for name, module in list(model.named_modules()):
            if type(module) is LoraLinear:
                parent_name, _, child = name.rpartition(".")
                parent = model.get_submodule(parent_name)
                swapped.append((parent, child, module))
                setattr(parent, child, MergedLinear(module, spans))
    try:
        yield
    finally:
        for parent, child, module in swapped:
            setattr(parent, child, module)


def install(model: torch.nn.Module) -> int:
    """Give every LoRA layer of `model` the sliced mixed-batch forward (per instance: peft itself is untouched), and
    the `routing` hook. Returns the number of layers patched."""
    count = 0
    routing = getattr(model, _ROUTING, None) or Routing()
    setattr(model, _ROUTING, routing)
    for module in model.modules():
        if type(module) is LoraLinear:  # not the quantised or embedding layers: their mixed forwards differ
            if not hasattr(module, _PEFT_MIXED):
                setattr(module, _PEFT_MIXED, module._mixed_batch_forward)
                module._mixed_batch_forward = types.MethodType(_sliced_mixed_batch_forward, module)
                module.register_forward_pre_hook(routing.pre_forward, with_kwargs=True)
            count += 1
    return count


@contextmanager
def routing(model: torch.nn.Module, adapter_names: Sequence[str]) -> Iterator[None]:
    """Row r of every forward of `model` (and of its recomputation in the backward pass) uses adapter
    `adapter_names[r]` ("__base__": none) while the context is open. Needs `install(model)`."""
    holder: Routing = getattr(model, _ROUTING)
    previous, holder.names = holder.names, tuple(adapter_names)
    try:
        yield
    finally:
        holder.names = previous
