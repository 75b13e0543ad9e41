"""CPU decoding with the base model's linear weights reordered once for oneDNN. No Django.

A decoding step multiplies a few rows by every weight of the model, so on a CPU its time is the
weights' memory traffic. PyTorch's default fp32 matmul (MKL) repacks the weight on every call when it
has more than one row: bench/serving.py's 8-row step took 1.6x a 1-row step. oneDNN's linear on a
weight reordered ahead of time (what ``torch.compile`` freezing does with ``_reorder_linear_weight``)
reads the weight once: on this machine the linear layers of a decoding step took 23 ms for 1 row and
24 ms for 8, against 37 and 57 ms. Its rows do not depend on each other, so a row's result is the
same alone or batched. The packed copy is kept beside the original weight, which peft's DoRA and
merges still read: the linear layers' weights take twice their memory.
"""

from __future__ import annotations

from types import MethodType

import torch

ROWS_HINT = 4  # the batch size oneDNN lays the weight out for; 1 to 16 rows measured within 20% of it


def pack_linears(model) -> int:
    """Give every fp32 ``nn.Linear`` on the CPU a oneDNN-reordered weight; returns how many were packed."""
    if not torch.backends.mkldnn.is_available():
        return 0
    packed = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if type(module) is not torch.nn.Linear or weight.dtype != torch.float32 or weight.device.type != "cpu":
            continue
        try:
            with torch.no_grad():
                module.packed_weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), ROWS_HINT)
        except RuntimeError:  # a CPU or build oneDNN cannot serve: the layer keeps PyTorch's own linear
            continue
        module.forward = MethodType(_packed_forward, module)
        packed += 1
    return packed


def _packed_forward(self, x):
    if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
        return torch.nn.functional.linear(x, self.weight, self.bias)  # oneDNN's packed op has no backward
    out = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), self.packed_weight, self.bias, "none", [], "")
    return out.reshape(*x.shape[:-1], out.shape[-1])
