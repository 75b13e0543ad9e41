"""Different LoRA adapters in one batch: the base layer once for every row, then each row's own LoRA delta.

peft's mixed adapter batches (``adapter_names=``) loop over the adapters in every layer, two small
matmuls and two indexing ops per adapter per layer; with 8 adapters that is over 3,000 small ops a
decoding step. Here, as in Punica's BGMV kernel, each LoRA layer keeps its adapters' A and B
matrices stacked (slot 0 all zeros: the base model), and a forward hook adds
``x @ A[slot] @ B[slot]`` for all rows at once with two gathered batched matmuls, whatever the
number of adapters. The scaling is folded into B. Layers peft runs differently (DoRA and other
variants, LoRA on embeddings, LoRA biases) make ``build`` return None, and the engine falls back to
peft's own mixed batches.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial

import torch


class MixedLora:
    """Stacked LoRA weights of the loaded adapters and the hooks that apply them per row."""

    def __init__(self, names: list[str]):
        self.names = names  # the adapters in stacking order
        self.dtype = torch.float32
        self.masks = None  # per step: rank -> (rows, adapters * rank) one-hot of each row's adapter's block
        self.handles = []
        self.layers = []
        self.ranks: set[int] = set()  # the layers' stacked ranks (the widest adapter's in each layer)

    @classmethod
    def build(cls, model, names: list[str]):
        """Stack the adapters' weights in every LoRA layer of the peft model; None if some layer needs peft."""
        from peft.tuners.lora.layer import Linear

        mixed = cls(names)
        for module in model.modules():
            if not hasattr(module, "lora_A"):
                continue
            if type(module) is not Linear or module.lora_variant or any(module.lora_bias.values()):
                return None
            a, b = _stack(module, names)
            mixed.dtype = a.dtype
            mixed.layers.append(module)
            mixed.ranks.add(a.shape[1] // len(names))
            mixed.handles.append(module.register_forward_hook(partial(mixed._add_delta, a, b)))
        return mixed

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    @contextmanager
    def rows(self, names: list[str | None], device):
        """Within the block, forward passes give row i the delta of adapter names[i] (None: none).

        peft's own LoRA path is switched off meanwhile, so that its layers compute the base layer alone."""
        slots = torch.tensor([self.names.index(n) if n else -1 for n in names], device=device)
        self.masks = {}
        for rank in self.ranks:
            block = torch.arange(len(self.names) * rank, device=device) // rank
            self.masks[rank] = (block[None, :] == slots[:, None]).to(self.dtype)
        for layer in self.layers:
            layer._disable_adapters = True
        try:
            yield
        finally:
            self.masks = None

    def _add_delta(self, a, b, module, args, output):
        """x @ [A_1 .. A_n] gives every adapter's low-rank activations, the mask keeps each row's own."""
        if self.masks is None:
            return None
        x = args[0]
        h = x.reshape(x.shape[0], -1, x.shape[-1]).to(a.dtype) @ a
        h = h * self.masks[a.shape[1] // len(self.names)][:, None, :]
        return output + (h @ b).reshape(*output.shape).to(output.dtype)


def _stack(module, names: list[str]):
    """A layer's adapters side by side: A as (in, n * rank), B scaled as (n * rank, out); zeros where absent."""
    present = [n for n in names if n in module.lora_A]
    rank = max((module.lora_A[n].weight.shape[0] for n in present), default=1)
    like = module.lora_A[present[0]].weight if present else module.base_layer.weight
    a = torch.zeros(module.in_features, len(names) * rank, dtype=like.dtype, device=like.device)
    b = torch.zeros(len(names) * rank, module.out_features, dtype=like.dtype, device=like.device)
    for slot, n in enumerate(names):
        if n in present:
            r = module.lora_A[n].weight.shape[0]
            a[:, slot * rank : slot * rank + r] = module.lora_A[n].weight.T
            b[slot * rank : slot * rank + r] = module.lora_B[n].weight.T * module.scaling[n]
    return a, b
