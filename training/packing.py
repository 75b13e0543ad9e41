"""Padding-free batches and the response-only loss of a training step. No Django.

A batch's examples are laid end to end in one row; position ids restart at 0 for each example, which
transformers turns into a block-diagonal causal mask (SDPA or flash attention), so no token attends
across an example's boundary and no compute goes to padding. The loss needs logits only where a
response token is predicted: the language-model head (a quarter of a small model's parameters, and
its vocabulary-wide softmax) runs on those positions alone.
"""

from __future__ import annotations

IGNORE = -100


def pack(examples) -> dict:
    """One row: input ids, position ids and next-token targets (IGNORE where no response token is
    predicted, including across each boundary between examples)."""
    import torch

    ids, positions, targets = [], [], []
    for e in examples:
        ids += e.input_ids
        positions += range(len(e.input_ids))
        targets += e.labels[1:] + [IGNORE]
    return {
        "input_ids": torch.tensor([ids], dtype=torch.long),
        "position_ids": torch.tensor([positions], dtype=torch.long),
        "targets": torch.tensor([targets], dtype=torch.long),
    }


def target_count(examples) -> int:
    return sum(sum(1 for label in e.labels[1:] if label != IGNORE) for e in examples)


def summed_loss(model, batch: dict, device: str):
    """Sum of the cross-entropy over the batch's response tokens. ``model`` is a peft model (or a plain
    causal LM); the decoder runs on the packed row, the head only where a target is."""
    import torch

    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    ids = batch["input_ids"].to(device)
    positions = batch["position_ids"].to(device)
    targets = batch["targets"].to(device)
    keep = (targets[0] != IGNORE).nonzero().squeeze(1)
    # Through the causal LM's own forward (a sharded base gathers its weights there), the head on ``keep`` only.
    logits = lm(input_ids=ids, position_ids=positions, use_cache=False, logits_to_keep=keep).logits[0]
    return torch.nn.functional.cross_entropy(logits.float(), targets[0, keep], reduction="sum")
