"""Packed batches: no token attends across a boundary between examples, whatever the attention
kernel, and an epoch's batches are seeded, records of a length together."""

import pytest

from training import packing
from training.examples import encode, epoch_batches


@pytest.fixture(scope="module")
def examples(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    records = [
        {"instruction": "What colour is the sky?", "output": "Blue, on a clear day."},
        {"instruction": "Name a prime.", "output": "Seven."},
        {"instruction": "Spell cat backwards, please, letter by letter.", "output": "t, a, c"},
    ]
    return [encode(tokenizer, record, 64) for record in records]


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_a_packed_row_scores_each_example_as_if_alone(tiny_model_dir, examples, attention):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attention, dtype=torch.float32)
    with torch.no_grad():
        packed = packing.summed_loss(model, packing.pack(examples), "cpu").item()
        alone = sum(packing.summed_loss(model, packing.pack([e]), "cpu").item() for e in examples)
        # Without position ids restarting at each example, the row is one long causal sequence.
        joined = packing.pack(examples)
        joined["position_ids"] = torch.arange(joined["input_ids"].shape[1]).unsqueeze(0)
        leaky = packing.summed_loss(model, joined, "cpu").item()
    assert packed == pytest.approx(alone, rel=1e-4)
    assert leaky != pytest.approx(alone, rel=1e-4)


def test_an_epochs_batches_hold_every_example_once_in_a_seeded_order():
    lengths = [5, 9, 5, 9, 7, 7, 5, 9, 5, 9]
    first, again, second = (epoch_batches(lengths, 2, 42, epoch) for epoch in (0, 0, 1))
    assert sorted(i for batch in first for i in batch) == list(range(10))
    assert first == again and first != second
    assert all(len({lengths[i] for i in batch}) == 1 for batch in first)  # similar lengths together
