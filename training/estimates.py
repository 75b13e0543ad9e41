"""Memory and time estimates for a fine-tune, from the model's shape and the run's settings. No Django.

Peak accelerator memory = base weights (4-bit NF4 with double quantisation ~0.53 bytes a parameter
for QLoRA, 2 bytes for LoRA in bf16/fp16 on a GPU, 4 on a CPU) + LoRA parameters with their
gradients and AdamW moments (16 bytes each, fp32) + activations (batch x sequence x hidden x layers
x ~34 bytes, the per-token activation footprint of a transformer block without checkpointing, plus
the logits: batch x sequence x vocabulary x 8 bytes for logits and their gradient) + a fixed 15%
allowance for the framework's workspace. On several devices each takes its share of the batch; with
the base sharded over them (FSDP), each holds its share of the base weights plus one decoder layer's
whole weights, gathered while that layer computes.

Time = loading + training + evaluation + attribution. Training: 6 x parameters x training tokens
(forward + backward) / the sustained rate the trainer reaches on the device, plus a fixed cost a step
(the small operations of every layer and adapter, which a batch of short records does not amortise),
both measured with `bench/learning.py` (bf16 on a CPU with AVX512-BF16; fp32 elsewhere). Training tokens: the records
that train (the held-out split does not) x epochs x tokens a record, which the Datanet counts as
words and punctuation: a model token is about half a word of invented or technical text, and the
chat template adds about 32 tokens a record. Evaluation answers up to 2 x ``task_eval_examples``
questions with each model; attribution takes one gradient of every record.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

# Sustained 6N FLOP/s of a training step: measured on a 2-core AVX512-BF16 CPU (bench/learning.py);
# a rough figure for one modern GPU.
SUSTAINED_FLOPS = {"cpu": 4.2e11, "cuda": 1.5e14}
# A step's cost beyond its FLOPs, per layer of the model: 0.2 s for the bundled model's 30 layers on the
# 2-core CPU, where a step of one short record spends more on it than on its matmuls.
STEP_SECONDS_PER_LAYER = {"cpu": 0.0067, "cuda": 0.0004}
# With compiled decoder layers (training/modeling.py, compiles) on a CPU: most of those small operations are
# fused, at the price of a first compile.
COMPILED_STEP_SECONDS_PER_LAYER = 0.0025
COMPILE_SECONDS = 20
LOAD_SECONDS = 15
TEMPLATE_TOKENS = 32
TOKENS_PER_WORD = 2.0
# Seconds to answer one question with one model, and for one record's attribution gradient (relative
# to one training pass over it), on a CPU; a GPU is taken to be as much faster as its FLOP/s.
ANSWER_SECONDS = 0.2
ATTRIBUTION_PASSES = 1.5


def record_tokens(words_per_record: float) -> float:
    return TOKENS_PER_WORD * words_per_record + TEMPLATE_TOKENS


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
    questions: int = 0,
    attributed_tokens: int = 0,
    compiled: bool = False,
    devices: int = 1,
    sharded: bool = False,
) -> dict:
    """Peak memory of one device and the run's time; ``devices``: the processes sharing each batch (all nodes'),
    ``sharded``: whether they shard the base (FSDP) or each hold all of it (DDP)."""
    bytes_per_weight = 0.53 if method == "qlora" else (4 if device == "cpu" else 2)
    weights = parameters * bytes_per_weight
    if sharded and devices > 1:
        weights = weights / devices + weights / max(shape["layers"], 1)
    lora = lora_parameters(shape, rank)
    adapter = lora * 16
    share = math.ceil(batch_size / max(devices, 1))
    activations = share * seq_len * (shape["hidden"] * shape["layers"] * 34 + shape["vocab"] * 8)
    peak = int((weights + adapter + activations) * 1.15)
    rate = SUSTAINED_FLOPS.get(device, SUSTAINED_FLOPS["cpu"])
    speedup = rate / SUSTAINED_FLOPS["cpu"]
    per_step = shape["layers"] * STEP_SECONDS_PER_LAYER.get(device, STEP_SECONDS_PER_LAYER["cpu"])
    steps = math.ceil(train_tokens / max(seq_len * batch_size, 1))
    step_cost = shape["layers"] * COMPILED_STEP_SECONDS_PER_LAYER if compiled else per_step
    train = 6 * parameters * train_tokens / rate + steps * step_cost + (COMPILE_SECONDS if compiled else 0)
    evaluate = 2 * 2 * questions * ANSWER_SECONDS / speedup
    # One gradient a record, in passes of at least 8 records (training/evaluation.py, pass_size), run eagerly.
    passes = attributed_tokens / max(seq_len, 1) / max(8, 2 * batch_size)
    attribute = ATTRIBUTION_PASSES * 6 * parameters * attributed_tokens / rate + passes * per_step
    seconds = LOAD_SECONDS + train + evaluate + attribute
    return {
        "peak_memory_bytes": peak,
        "weights_bytes": int(weights),
        "adapter_bytes": int(adapter),
        "activation_bytes": int(activations),
        "trainable_parameters": lora,
        "seconds": round(seconds, 1),
        "train_seconds": round(train, 1),
        "device": device,
    }


# Full fine-tuning: fp32 weights, their gradients, AdamW's two moments, and the CPU copy of the base weights the
# side-by-side evaluation swaps in (training/full.py): 20 bytes a parameter, with the 15% allowance.
FULL_BYTES_PER_PARAMETER = 20


def full_bytes(parameters: int) -> int:
    return int(parameters * FULL_BYTES_PER_PARAMETER * 1.15)


def full_fits(parameters: int, memory_bytes: int) -> bool:
    """Whether every weight may train: its states take at most half the memory, the rest for activations."""
    return full_bytes(parameters) <= memory_bytes // 2
