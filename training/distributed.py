"""A fine-tune across several processes: torch.distributed's DistributedDataParallel over the trainable
weights, the ranks started by torchrun. No Django.

    torchrun --standalone --nproc-per-node 2 -m training.trainer CONFIG.json

Every rank walks the same global batches a single process takes (``config.batch_size`` records, grouped
by length) and packs its own share of each: records ``rank``, ``rank + world``, ... The loss of a step is
still the sum over the global batch's response tokens divided by their count, so a run on N processes
follows the single-process run step for step, and a checkpoint's data position means the same at any
world size: it resumes on 1 process or on 4. Only rank 0 reports, writes checkpoints, evaluates,
attributes and saves; the other ranks end when training ends. Backend: NCCL on CUDA, gloo on a CPU.
"""

from __future__ import annotations

import contextlib
import os

from training import packing


def world() -> tuple[int, int]:
    """This process's rank and the number of processes (0 and 1 outside torchrun)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def start(device: str) -> None:
    """Join the process group torchrun set up (a no-op for a single process); CUDA ranks take their
    local GPU."""
    import torch
    import torch.distributed as dist

    if world()[1] == 1 or dist.is_initialized():
        return
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if device == "cuda" else "gloo")


def stop() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _packed_loss(model, device: str):
    """The model behind DDP: a module whose forward is the summed response-token loss of one packed row."""
    import torch

    class PackedLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, batch: dict):
            return packing.summed_loss(self.model, batch, device)

    return PackedLoss()


class Replicas:
    """The model as the training step sees it: itself for one process; wrapped in DDP for several, which
    averages the trainable weights' gradients across ranks during the backward pass."""

    def __init__(self, model, device: str):
        self.model, self.device = model, device
        self.rank, self.size = world()
        self.ddp = None
        if self.size > 1:
            from torch.nn.parallel import DistributedDataParallel

            module = _packed_loss(model, device)
            # Only the adapter trains: the frozen base (4-bit under QLoRA) is neither broadcast nor reduced.
            frozen = [name for name, p in module.named_parameters() if not p.requires_grad]
            frozen += [name for name, _ in module.named_buffers()]
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, frozen)
            ids = [int(os.environ.get("LOCAL_RANK", 0))] if device == "cuda" else None
            self.ddp = DistributedDataParallel(module, device_ids=ids)

    def share(self, records: list) -> list:
        """This rank's records of a global batch."""
        return records[self.rank :: self.size]

    def loss(self, records: list, last: bool):
        """The summed loss of this rank's share of ``records``, scaled so that DDP's average over the ranks
        is the sum over all of them; gradients are exchanged on the ``last`` batch of a step only."""
        if self.ddp is None:
            return packing.summed_loss(self.model, packing.pack(records), self.device)
        share = self.share(records)
        # A batch smaller than the world (an epoch's last) leaves a rank without records; it still takes
        # part in the gradient exchange, with a zero loss over one record.
        weight = self.size if share else 0
        with contextlib.nullcontext() if last else self.ddp.no_sync():
            return self.ddp(packing.pack(share or records[:1])) * weight

    def rank_zeros(self, decision: bool) -> bool:
        """Rank 0's decision on every rank (to stop early: ranks on other machines may round a held-out loss
        differently, and a rank that stopped alone would leave the others waiting)."""
        if self.size == 1:
            return decision
        import torch
        import torch.distributed as dist

        flag = torch.tensor([int(decision)], device=self.device)  # NCCL reduces CUDA tensors only
        dist.broadcast(flag, src=0)
        return bool(flag.item())

    def mean(self, value: float) -> float:
        """A figure averaged over the ranks: the step's loss, which each rank holds scaled by the world."""
        if self.size == 1:
            return value
        import torch
        import torch.distributed as dist

        figure = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(figure)
        return float(figure.item()) / self.size
