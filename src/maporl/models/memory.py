"""The arithmetic of an update's peak GPU memory (docs/real_models.md), from a model's config.json: what the GPU
check (bench/gpu_check.py) puts beside the peak it measures.

Assumes the memory options a real model runs with: bf16 weights, one LoRA adapter per agent on every linear layer of
the decoder (fp32, with its gradient and AdamW's two moments: 16 bytes a parameter), activation checkpointing (each
layer's input kept, one layer recomputed at a time), the answer span's logits only, and the fp32 log-softmax taken
1,024 positions at a time.
"""

from __future__ import annotations

from typing import Any

BF16, FP32 = 2, 4
LOGSOFTMAX_CHUNK = 1024  # positions per fp32 log-softmax chunk (policy.selective_log_softmax)


def _shape(config: dict[str, Any]) -> tuple[int, int, int, int, int]:
    """(hidden, MLP width, layers, vocabulary, key/value width) of a decoder config (Qwen2 / Llama style keys)."""
    h, layers = config["hidden_size"], config["num_hidden_layers"]
    head_dim = config.get("head_dim") or h // config["num_attention_heads"]
    kv = config.get("num_key_value_heads") or config["num_attention_heads"]
    return h, config["intermediate_size"], layers, config["vocab_size"], kv * head_dim


def parameters(config: dict[str, Any]) -> int:
    """Parameters of a Qwen2/Llama-style decoder: embeddings (and an untied head), attention (q, k, v with the bias
    Qwen2 has, o), the gated MLP and the norms."""
    h, m, layers, vocab, kv = _shape(config)
    bias = h + 2 * kv if config.get("model_type") == "qwen2" else 0
    per_layer = 2 * h * h + 2 * h * kv + bias + 3 * h * m + 2 * h
    head = 0 if config.get("tie_word_embeddings", False) else vocab * h
    return vocab * h + head + layers * per_layer + h


def lora_parameters(config: dict[str, Any], rank: int) -> int:
    """One adapter of rank r on q, k, v, o, gate, up and down: r x (inputs + outputs) of each."""
    h, m, layers, _, kv = _shape(config)
    return layers * rank * (9 * h + 2 * kv + 3 * m)


def update_peak_estimate(
    config: dict[str, Any], agents: int, rank: int, rows: int, row_tokens: int, answer_tokens: int
) -> dict[str, float]:
    """Bytes at the update's peak, by part: `rows` rows of `row_tokens` tokens in the largest micro-batch, each with
    an answer of `answer_tokens` (the logits cover the answer span and one position more)."""
    h, m, layers, vocab, _ = _shape(config)
    tokens, positions = rows * row_tokens, rows * (answer_tokens + 1)
    parts = {
        "weights": parameters(config) * BF16,
        "adapters": agents * lora_parameters(config, rank) * 4 * FP32,  # weights, gradients, two AdamW moments
        # each layer's input for the whole micro-batch, plus one layer's activations while it is recomputed
        "activations": tokens * (layers * h + 8 * h + 4 * m) * BF16,
        "logits": positions * vocab * 2 * BF16,  # the answer span's logits and their gradient
        "logsoftmax_chunk": min(LOGSOFTMAX_CHUNK, positions) * vocab * FP32,
    }
    return parts | {"total": sum(parts.values())}
