"""Memory and time estimates for a fine-tune, from the model's shape and the run's settings. No Django.

Peak accelerator memory = base weights (4-bit NF4 with double quantisation ~0.53 bytes a parameter
for QLoRA, 2 bytes for LoRA in bf16/fp16 on a GPU, 4 on a CPU) + LoRA parameters with their
gradients and AdamW moments (16 bytes each, fp32) + activations (batch x sequence x hidden x layers
x ~34 bytes, the per-token activation footprint of a transformer block without checkpointing, plus
the logits: batch x sequence x vocabulary x 8 bytes for logits and their gradient) + a fixed 15%
allowance for the framework's workspace.

Time = 6 x parameters x training tokens (forward + backward) / sustained FLOP/s of the device.
"""

from __future__ import annotations

import json
from pathlib import Path

SUSTAINED_FLOPS = {"cpu": 2.0e10, "cuda": 1.5e14}  # rough sustained rates for a 2-core CPU and one modern GPU


def model_shape(model_dir: Path | str) -> dict:
    config = json.loads((Path(model_dir) / "config.json").read_text())
    return {
        "hidden": config.get("hidden_size", 0),
        "layers": config.get("num_hidden_layers", 0),
        "intermediate": config.get("intermediate_size", 0),
        "vocab": config.get("vocab_size", 0),
        "heads": config.get("num_attention_heads", 1),
        "kv_heads": config.get("num_key_value_heads", config.get("num_attention_heads", 1)),
    }


def lora_parameters(shape: dict, rank: int) -> int:
    """LoRA A and B for every linear layer of every block (q, k, v, o, gate, up, down)."""
    h, i, layers = shape["hidden"], shape["intermediate"], shape["layers"]
    kv = h * shape["kv_heads"] // max(shape["heads"], 1)
    linears = [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]
    return layers * sum(rank * (a + b) for a, b in linears)


def estimate(
    *,
    parameters: int,
    shape: dict,
    method: str,
    rank: int,
    batch_size: int,
    seq_len: int,
    train_tokens: int,
    device: str = "cpu",
) -> dict:
    bytes_per_weight = 0.53 if method == "qlora" else (4 if device == "cpu" else 2)
    weights = parameters * bytes_per_weight
    lora = lora_parameters(shape, rank)
    adapter = lora * 16
    activations = batch_size * seq_len * (shape["hidden"] * shape["layers"] * 34 + shape["vocab"] * 8)
    peak = int((weights + adapter + activations) * 1.15)
    seconds = 6 * parameters * train_tokens / SUSTAINED_FLOPS.get(device, SUSTAINED_FLOPS["cpu"])
    return {
        "peak_memory_bytes": peak,
        "weights_bytes": int(weights),
        "adapter_bytes": int(adapter),
        "activation_bytes": int(activations),
        "trainable_parameters": lora,
        "seconds": round(seconds, 1),
        "device": device,
    }
