"""Different LoRA adapters in one batch: the base layer once for every row, then each row's own LoRA delta.

peft's mixed adapter batches (``adapter_names=``) loop over the adapters in every layer, two small
matmuls and two indexing ops per adapter per layer; with 8 adapters that is over 3,000 small ops a
decoding step. Here, as in Punica's and S-LoRA's gathered kernels, each LoRA layer keeps its adapters'
matrices in slots of two stacked tensors, A as (slots, in, rank) and B, scaled, as (slots, rank, out);
slot 0 stays all zeros for rows on the base model. A forward hook gathers each row's slot and adds
``x @ A[slot] @ B[slot]`` with two batched matmuls, so a step costs the same whether 2 adapters are
loaded or 128. An adapter takes a slot when it is loaded and gives it back when it is evicted: nothing
is restacked. Layers peft runs differently (DoRA and other variants, LoRA on embeddings, LoRA biases)
make ``build`` return None, and the engine falls back to peft's own mixed batches.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial

import torch


class _Slots:
    """One LoRA layer's adapters, stacked; grows (by a quarter) in slots, and in rank, as adapters need."""

    def __init__(self, module):
        self.module = module
        like = module.base_layer.weight
        self.a = torch.zeros(2, module.in_features, 1, dtype=like.dtype, device=like.device)
        self.b = torch.zeros(2, 1, module.out_features, dtype=like.dtype, device=like.device)

    def write(self, slot: int, name: str) -> None:
        module = self.module
        rank = module.lora_A[name].weight.shape[0] if name in module.lora_A else 0
        if slot >= self.a.shape[0] or rank > self.rank:
            capacity = self.a.shape[0]
            self._grow(max(slot + 1, capacity + capacity // 4) if slot >= capacity else capacity, max(self.rank, rank))
        self.a[slot].zero_()
        self.b[slot].zero_()
        if name in module.lora_A:  # an adapter may leave some layers alone
            r = module.lora_A[name].weight.shape[0]
            self.a[slot, :, :r] = module.lora_A[name].weight.T
            self.b[slot, :r] = module.lora_B[name].weight.T * module.scaling[name]

    @property
    def rank(self) -> int:
        return self.a.shape[2]

    def _grow(self, slots: int, rank: int) -> None:
        a = self.a.new_zeros(slots, self.a.shape[1], rank)
        b = self.b.new_zeros(slots, rank, self.b.shape[2])
        a[: self.a.shape[0], :, : self.rank] = self.a
        b[: self.b.shape[0], : self.rank] = self.b
        self.a, self.b = a, b


class MixedLora:
    """The loaded adapters' slots in every LoRA layer, and the hooks that apply each row's adapter."""

    def __init__(self):
        self.slot: dict[str, int] = {}  # adapter name -> slot (from 1; 0 is the base model)
        self.layers: list[_Slots] = []
        self.handles = []
        self.rows_slots = None  # per step: each row's slot

    @classmethod
    @torch.inference_mode()
    def build(cls, model, names: list[str]):
        """Slots for the adapters in every LoRA layer of the peft model; None if some layer needs peft."""
        from peft.tuners.lora.layer import Linear

        mixed = cls()
        for module in model.modules():
            if not hasattr(module, "lora_A"):
                continue
            if type(module) is not Linear or module.lora_variant or any(module.lora_bias.values()):
                mixed.remove()
                return None
            slots = _Slots(module)
            mixed.layers.append(slots)
            mixed.handles.append(module.register_forward_hook(partial(mixed._add_delta, slots)))
        for name in names:
            if not mixed.add(name):
                mixed.remove()
                return None
        return mixed

    @torch.inference_mode()  # the slots are inference tensors: built, written and read in inference mode
    def add(self, name: str) -> bool:
        """Give a newly loaded adapter a slot; False if one of its layers needs peft's own path."""
        for slots in self.layers:
            module = slots.module
            if name in module.lora_A and (module.lora_variant.get(name) or module.lora_bias.get(name)):
                return False
        free = next(i for i in range(1, len(self.slot) + 2) if i not in self.slot.values())
        self.slot[name] = free
        for slots in self.layers:
            slots.write(free, name)
        return True

    def drop(self, name: str) -> None:
        """An evicted adapter's slot is free for the next one."""
        self.slot.pop(name, None)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    @contextmanager
    def rows(self, names: list[str | None], device):
        """Within the block, forward passes give row i the delta of adapter names[i] (None: none).

        peft's own LoRA path is switched off meanwhile, so that its layers compute the base layer alone."""
        self.rows_slots = torch.tensor([self.slot[n] if n else 0 for n in names], device=device)
        for slots in self.layers:
            slots.module._disable_adapters = True
        try:
            yield
        finally:
            self.rows_slots = None

    def _add_delta(self, slots: _Slots, module, args, output):
        """x @ A[slot] @ B[slot] for each row: the rows' matrices gathered, then two batched matmuls."""
        if self.rows_slots is None:
            return None
        x = args[0]
        x = x.reshape(x.shape[0], -1, x.shape[-1]).to(slots.a.dtype)
        h = torch.bmm(x, slots.a.index_select(0, self.rows_slots))
        delta = torch.bmm(h, slots.b.index_select(0, self.rows_slots))
        return output + delta.reshape(*output.shape).to(output.dtype)
