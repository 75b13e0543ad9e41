"""Compiled decoder layers (training/modeling.py) train as the eager model does: the same loss and the same
adapter gradients on packed rows of different lengths, and evaluation under them runs eagerly."""

import pytest

from training import modeling, packing
from training.config import TrainConfig
from training.examples import encode

RECORDS = [
    {"instruction": "What colour is the sky?", "output": "Blue, on a clear day."},
    {"instruction": "Name a prime.", "output": "Seven."},
    {"instruction": "Spell cat backwards, please, letter by letter.", "output": "t, a, c"},
]


def loss_and_gradients(model, batch) -> tuple[float, dict]:
    model.zero_grad(set_to_none=True)
    loss = packing.summed_loss(model, batch, "cpu")
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return loss.item(), grads


def test_compiled_layers_give_the_eager_loss_and_gradients(tiny_model_dir):
    import torch
    from torch._dynamo.utils import counters

    config = TrainConfig(base_model_path=str(tiny_model_dir), method="lora", precision="fp32", lora_dropout=0.0)
    model, tokenizer, compute = modeling.load_model(config)
    assert not modeling.compiles(config, "cpu", compute["method"])  # "auto": a tiny model is not worth a compile
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.05)  # B starts at zero: no gradient reaches A otherwise
    examples = [encode(tokenizer, record, 64) for record in RECORDS]
    batches = [packing.pack(examples[:1]), packing.pack(examples)]  # two lengths: one dynamic graph
    eager = [loss_and_gradients(model, batch) for batch in batches]

    modeling.compile_layers(model)
    captured = counters["stats"]["calls_captured"]
    compiled = [loss_and_gradients(model, batch) for batch in batches]
    assert counters["stats"]["calls_captured"] > captured  # the layers ran compiled
    for (loss, grads), (compiled_loss, compiled_grads) in zip(eager, compiled, strict=True):
        assert compiled_loss == pytest.approx(loss, rel=1e-4)
        for name, grad in grads.items():
            torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-3, atol=1e-5)

    captured = counters["stats"]["calls_captured"]
    with modeling.eager({"compiled": True}), torch.no_grad():
        again = packing.summed_loss(model, batches[1], "cpu").item()
    assert counters["stats"]["calls_captured"] == captured  # no compile for a no-grad pass
    assert again == pytest.approx(eager[1][0], rel=1e-4)
