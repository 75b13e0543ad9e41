"""A fine-tune across several processes: torch.distributed's DistributedDataParallel over the trainable
weights, the ranks started by torchrun. No Django.

    torchrun --standalone --nproc-per-node 2 -m training.trainer CONFIG.json

Every rank walks the same global batches a single process takes (``config.batch_size`` records, grouped
by length) and packs its own share of each: records ``rank``, ``rank + world``, ... The loss of a step is
still the sum over the global batch's response tokens divided by their count, so a run on N processes
follows the single-process run step for step, and a checkpoint's data position means the same at any
world size: it resumes on 1 process or on 4. Backend: NCCL on CUDA, gloo on a CPU.

Two ways to spread the model (``config.parallel``):
- "ddp": every rank holds the whole model; DistributedDataParallel averages the adapter's gradients. Only
  rank 0 reports, writes checkpoints, evaluates, attributes and saves; the other ranks end with training.
- "fsdp": for a base too large for one device. PyTorch's FSDP2 (``fully_shard``) shards the frozen base
  weights over the ranks, decoder layer by decoder layer, and gathers a layer's whole weights only while
  it computes; the adapter stays whole on every rank (FSDP's ignored parameters) and its gradients are
  summed across the ranks once a step. Every forward then needs every rank, so all of them take part in
  the held-out checks, the evaluation and the attribution; rank 0 alone reports and writes. LoRA and DoRA
  on a bf16 or fp32 base only: bitsandbytes' 4-bit weights are not sharded here (FSDP-QLoRA needs
  ``bnb_4bit_quant_storage`` on CUDA, which no session could try), so QLoRA spreads with DDP.
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


def sharded(config) -> bool:
    """Whether this run shards its base model over several processes (FSDP)."""
    return config.parallel == "fsdp" and world()[1] > 1


def shard(model, device: str) -> int:
    """Shard the base model's frozen weights over the ranks (FSDP2: each decoder layer, then the rest of the
    model: embeddings, final norm, head) on their devices, the adapter whole on each. Rank 0 holds the
    model's weights in host memory, the others its shapes only (modeling.load_model "host" and "meta"): rank 0
    sends every rank its shards and the adapter's first weights, one tensor at a time, so one copy of the
    base is ever whole in a machine's memory. Returns the bytes of weights this rank holds."""
    import torch
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.fsdp import fully_shard

    rank = world()[0]
    whole = model.state_dict() if rank == 0 else {}
    adapter = [p for p in model.parameters() if p.requires_grad]
    lm = model.get_base_model()  # the root: generate() calls it, not the peft wrapper
    for layer in lm.get_decoder().layers:
        fully_shard(layer, ignored_params=set(adapter))
    fully_shard(lm, ignored_params=set(adapter))
    target = torch.device(device, torch.cuda.current_device()) if device == "cuda" else torch.device(device)
    if rank:
        model.to_empty(device=target)
    else:
        with torch.no_grad():
            for parameter in adapter:
                parameter.data = parameter.data.to(target)
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(model, whole, options=options)
    del whole
    # Buffers a state_dict leaves out (rotary frequencies): from rank 0 too.
    for buffer in model.buffers():
        if rank == 0:
            buffer.data = buffer.data.to(target)
        dist.broadcast(buffer, src=0)
    return sum((p.to_local() if hasattr(p, "to_local") else p).numel() * p.element_size() for p in model.parameters())


def peaks(device: str) -> list[int]:
    """Every rank's peak memory so far, in bytes (CUDA: the most allocated; a CPU: the process's peak RSS)."""
    import resource

    import torch
    import torch.distributed as dist

    if device == "cuda":
        mine = torch.cuda.max_memory_allocated()
    else:
        mine = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if world()[1] == 1:
        return [mine]
    figures = torch.zeros(world()[1], dtype=torch.int64, device=device)
    figures[world()[0]] = mine
    dist.all_reduce(figures)
    return [int(f) for f in figures.tolist()]


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
    """The model as the training step sees it: itself for one process; for several, wrapped in DDP, which
    averages the trainable weights' gradients across ranks during the backward pass, or with its base
    sharded (``shard``), whose adapter gradients ``synchronise`` sums after the step's last backward."""

    def __init__(self, model, device: str, sharded: bool = False):
        self.model, self.device, self.sharded = model, device, sharded
        self.rank, self.size = world()
        self.ddp = None
        # Each rank's loss is its share of the step's summed loss, times the world under DDP, whose mean is then
        # the sum; the figure reported is the ranks' sum divided by this.
        self.scale = 1 if sharded else self.size
        if self.size > 1 and not sharded:
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
        if self.size == 1:
            return packing.summed_loss(self.model, packing.pack(records), self.device)
        share = self.share(records)
        # A batch smaller than the world (an epoch's last) leaves a rank without records; it still takes
        # part in the gradient exchange (and a sharded base's gathers), with a zero loss over one record.
        weight = self.scale if share else 0
        if self.sharded:
            return packing.summed_loss(self.model, packing.pack(share or records[:1]), self.device) * weight
        with contextlib.nullcontext() if last else self.ddp.no_sync():
            return self.ddp(packing.pack(share or records[:1])) * weight

    def synchronise(self, parameters: list) -> None:
        """With a sharded base: sum the adapter's gradients over the ranks, in one exchange a step."""
        if not self.sharded:
            return
        import torch
        import torch.distributed as dist

        grads = [p.grad for p in parameters]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        for grad, summed in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
            grad.copy_(summed.view_as(grad))

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

    def total(self, value: float) -> float:
        """The step's loss over all the ranks, from each rank's share of it (see ``scale``)."""
        if self.size == 1:
            return value
        import torch
        import torch.distributed as dist

        figure = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(figure)
        return float(figure.item()) / self.scale
