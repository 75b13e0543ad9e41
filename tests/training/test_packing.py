"""Packed batches: no token attends across a boundary between examples, whatever the attention
kernel, and an epoch's batches are a seeded shuffle."""

import pytest

from training import packing
from training.examples import encode, epoch_batches
from training.modeling import EAGER_MAX_ROW, pick_attention


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


def test_an_epochs_batches_are_a_seeded_shuffle_of_every_example():
    first, again, second = epoch_batches(10, 3, 42, 0), epoch_batches(10, 3, 42, 0), epoch_batches(10, 3, 42, 1)
    assert sorted(i for batch in first for i in batch) == list(range(10))
    assert [len(batch) for batch in first] == [3, 3, 3, 1]
    assert first == again and first != second


def test_short_rows_on_a_cpu_take_eager_attention_and_long_ones_keep_sdpa(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    def model():
        return AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")

    class Wrapped:  # a peft model's one method that pick_attention calls
        def __init__(self, lm):
            self.lm = lm

        def get_base_model(self):
            return self.lm

    assert pick_attention(Wrapped(model()), "cpu", EAGER_MAX_ROW) == "eager"
    assert pick_attention(Wrapped(model()), "cpu", EAGER_MAX_ROW + 1) == "sdpa"
    assert pick_attention(Wrapped(model()), "cuda", 16) == "sdpa"
