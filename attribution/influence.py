"""Influence of training records on an adapter's held-out loss, from LoRA gradients. No Django.

Per-example gradients of the LoRA weights only (the base stays frozen) are taken in one batched
pass: hooks on each LoRA ``nn.Linear`` keep its input ``x`` and output gradient ``g``, and the
example's weight gradient is ``sum_t g_t x_t^T``. Training records use their summed response-token
loss (each token weighs the same in training); held-out examples use their mean per-token loss.
Where all gradients would not fit in ``max_gradient_bytes``, each module's gradient is projected
with a seeded CountSketch (a sparse random projection that keeps inner products in expectation).

Two methods give a matrix ``S[record, question]``, larger meaning "training on this record lowered
the loss on this held-out question":

- ``tracin``: the gradient dot product ``g_record . g_question`` at the final adapter (TracIn with
  one checkpoint, Pruthi et al. 2020), times the learning rate.
- ``datainf``: DataInf's closed form (Kwon et al. 2023) of ``g_question^T H^-1 g_record`` with a
  layer-wise damped Hessian approximation, ``lambda_l = damping * mean_i(||g_il||^2) / d_l`` as in
  the authors' code. The sign is flipped from the paper's influence so that helpful is positive.

Per contributor: the sum of its records' scores (mean over questions). Shares are the positive
parts normalised to 1 (a contributor whose data made held-out loss worse gets share 0 and keeps its
negative score). Confidence intervals come from a bootstrap over the held-out questions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from .aggregation import AGGREGATIONS, METHODS

FINAL_ADAPTER = ("datainf", "tracin")  # computed from the trained adapter alone: can be recomputed later
# tracincp is gathered while the run trains (attribution/trace.py)
LossFn = Callable[[object, list, str], tuple]  # (model, chunk, device) -> (summed loss, row owners, row weights)
DEFAULT_METHOD = "datainf"


@dataclass
class InfluenceConfig:
    methods: tuple[str, ...] = FINAL_ADAPTER
    damping: float = 10.0  # DataInf's lambda multiplier
    unit_norm: bool = True  # score each record by its gradient's direction, not its size (as LESS does)
    projection_dim: int = 0  # 0: exact gradients when they fit, else CountSketch to `fallback_dim`
    fallback_dim: int = 256
    max_gradient_bytes: int = 1 << 30
    batch_size: int = 8
    bootstrap: int = 1000
    seed: int = 0
    aggregation: str = "sum"  # or "question_shares" (AGGREGATIONS)

    def validate(self) -> None:
        unknown = set(self.methods) - set(METHODS)
        if unknown or not self.methods:
            raise ValueError(f"influence methods must be among {', '.join(METHODS)}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"influence aggregation must be one of {', '.join(AGGREGATIONS)}")
        if self.damping <= 0 or self.projection_dim < 0 or self.batch_size < 1 or self.bootstrap < 10:
            raise ValueError("influence damping > 0, projection_dim >= 0, batch_size >= 1, bootstrap >= 10")


class GradientCapture:
    """Per-example weight gradients of every trainable ``nn.Linear`` (the LoRA A and B matrices)."""

    def __init__(self, model, project_to: int, seed: int):
        import torch

        self.modules = [
            (name, module)
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and module.weight.requires_grad
        ]
        if not self.modules:
            raise ValueError("the model has no trainable linear (LoRA) weights")
        self.sizes = [module.weight.numel() for _, module in self.modules]
        self.dims = [min(project_to, size) if project_to else size for size in self.sizes]
        self.sketches = []
        generator = torch.Generator().manual_seed(seed)
        for size, dim in zip(self.sizes, self.dims, strict=True):
            if dim == size:
                self.sketches.append(None)
            else:
                bucket = torch.randint(0, dim, (size,), generator=generator)
                sign = torch.randint(0, 2, (size,), generator=generator).float() * 2 - 1
                self.sketches.append((bucket, sign))
        self.inputs: dict[int, object] = {}
        self.grads: dict[int, object] = {}
        self.handles = [module.register_forward_hook(self._hook(i)) for i, (_, module) in enumerate(self.modules)]

    def _hook(self, index: int):
        def forward(module, args, output):
            self.inputs[index] = args[0].detach()
            if output.requires_grad:
                output.register_hook(lambda grad: self.grads.__setitem__(index, grad.detach()))

        return forward

    def per_example(self, device: str) -> list:
        """[batch, dim] per module for the last backward pass."""
        import torch

        out = []
        for i in range(len(self.modules)):
            x, g = self.inputs.pop(i).float(), self.grads.pop(i).float()
            if x.dim() == 2:
                x, g = x.unsqueeze(1), g.unsqueeze(1)
            flat = torch.einsum("bto,bti->boi", g, x).reshape(x.shape[0], -1)
            out.append(self.sketch(i, flat).to(device))
        return out

    def per_record(self, lengths: list[int]) -> list:
        """[records, size] per module (not projected) for the last backward pass of one packed row holding
        records of ``lengths`` tokens end to end (training/packing.py): a record's gradient is the sum over
        its own tokens."""
        import torch
        from torch.nn.utils.rnn import pad_sequence

        out = []
        for i in range(len(self.modules)):
            x, g = self.inputs.pop(i).float(), self.grads.pop(i).float()
            x, g = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
            xs = pad_sequence(list(x.split(lengths)), batch_first=True)  # [records, longest, in]
            gs = pad_sequence(list(g.split(lengths)), batch_first=True)
            out.append(torch.bmm(gs.transpose(1, 2), xs).reshape(len(lengths), -1))
        return out

    def sketch(self, index: int, flat):
        """Module ``index``'s gradients [n, size] projected to [n, dim] (as they are where no projection)."""
        import torch

        if self.sketches[index] is None:
            return flat
        bucket, sign = (t.to(flat.device) for t in self.sketches[index])
        return torch.zeros(flat.shape[0], self.dims[index], device=flat.device).index_add_(1, bucket, flat * sign)

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def supervised_loss(model, chunk: list, *, pad_id: int, device: str, per_token: bool):
    """The summed response-token loss of ``chunk`` (one example a row) and each row's weight: one over its
    response tokens for ``per_token`` (a mean per token), else one."""
    import torch

    from training.examples import IGNORE, collate

    batch = {k: v.to(device) for k, v in collate(chunk, pad_id).items()}
    loss = model(**batch, num_items_in_batch=torch.tensor(1, device=device)).loss
    counts = (batch["labels"][:, 1:] != IGNORE).sum(dim=1).clamp(min=1).float().cpu()
    return loss, torch.arange(len(chunk)), (1 / counts if per_token else torch.ones(len(chunk)))


def gradients(
    model,
    examples: list,
    *,
    capture: GradientCapture,
    batch_size: int,
    pad_id: int,
    device: str,
    per_token: bool,
    progress: Callable[[int], None] | None = None,
    loss_fn: LossFn | None = None,
) -> list:
    """Per-module matrices [len(examples), dim] of per-example gradients (kept on the CPU).

    ``loss_fn(model, chunk, device)`` gives a loss summed over the chunk's examples, which batch row
    belongs to which example and a weight per row; by default the supervised loss, one example a row.
    An example spread over several rows (a preference pair: chosen and rejected) gets their gradients'
    sum, which is its own loss's gradient because that loss depends on its rows only."""
    import torch

    parts: list[list] = [[] for _ in capture.modules]
    model.eval()  # no dropout: the gradients of the adapter as it is
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        with torch.enable_grad():
            # A summed loss: each example's gradient is that of its own loss.
            if loss_fn is None:
                loss, owners, weights = supervised_loss(model, chunk, pad_id=pad_id, device=device, per_token=per_token)
            else:
                loss, owners, weights = loss_fn(model, chunk, device)
            loss.backward()
        model.zero_grad(set_to_none=True)
        rows = capture.per_example("cpu")
        grads = [torch.zeros(len(chunk), g.shape[1]).index_add_(0, owners, g * weights[:, None]) for g in rows]
        for part, grad in zip(parts, grads, strict=True):
            part.append(grad)
        if progress:
            progress(min(start + batch_size, len(examples)))
    model.train()
    return [torch.cat(part).numpy() for part in parts]


def tracin_scores(train: list[np.ndarray], held_out: list[np.ndarray], learning_rate: float) -> np.ndarray:
    return learning_rate * sum(g @ v.T for g, v in zip(train, held_out, strict=True))


def datainf_scores(train: list[np.ndarray], held_out: list[np.ndarray], damping: float, sizes: list[int]) -> np.ndarray:
    """S[i, j] = sum_l v_jl^T (1 / (n lambda_l)) sum_k (I - g_kl g_kl^T / (lambda_l + |g_kl|^2)) g_il."""
    n = train[0].shape[0]
    total = np.zeros((n, held_out[0].shape[0]), dtype=np.float64)
    for g, v, size in zip(train, held_out, sizes, strict=True):
        g, v = g.astype(np.float64), v.astype(np.float64)
        norms = np.einsum("ij,ij->i", g, g)
        lam = damping * norms.mean() / size
        if lam == 0:
            continue
        gv = g @ v.T  # [n, m]
        c = gv / (lam + norms)[:, None]
        total += (gv - g @ (g.T @ c) / n) / lam
    return total


def contributor_table(
    scores: np.ndarray, contributors: list[str], *, bootstrap: int, seed: int, aggregation: str = "sum"
) -> list[dict]:
    """Per-contributor sums of record scores (mean over held-out questions), shares by the ``aggregation``
    rule (AGGREGATIONS) and 95% intervals from a bootstrap over the questions."""
    names = sorted(set(contributors))
    index = {name: i for i, name in enumerate(names)}
    member = np.zeros((len(names), len(contributors)))
    for row, name in enumerate(contributors):
        member[index[name], row] = 1.0
    per_question = member @ scores  # [contributors, questions]
    point = per_question.mean(axis=1)
    rng = np.random.default_rng(seed)
    m = per_question.shape[1]
    draws = rng.integers(0, m, size=(bootstrap, m))
    samples = per_question[:, draws].mean(axis=2)  # [contributors, B]
    if aggregation == "question_shares":
        explained = _shares(per_question)  # [contributors, questions], each question's column sums to 1 or 0
        shares = _shares(explained.mean(axis=1))
        sample_shares = _shares(explained[:, draws].mean(axis=2))
    else:
        shares, sample_shares = _shares(point), _shares(samples)
    counts = member.sum(axis=1)
    table = [
        {
            "contributor": name,
            "records": int(counts[i]),
            "score": float(point[i]),
            "score_ci": [float(np.percentile(samples[i], 2.5)), float(np.percentile(samples[i], 97.5))],
            "share": float(shares[i]),
            "share_ci": [float(np.percentile(sample_shares[i], 2.5)), float(np.percentile(sample_shares[i], 97.5))],
        }
        for i, name in enumerate(names)
    ]
    return sorted(table, key=lambda row: (-row["score"], row["contributor"]))


def _shares(scores: np.ndarray) -> np.ndarray:
    """Positive parts normalised to 1 along the first axis (contributors); all zero where none is positive."""
    positive = np.clip(scores, 0, None)
    totals = positive.sum(axis=0)
    return np.divide(positive, totals, out=np.zeros_like(positive), where=totals > 0)


@dataclass
class InfluenceResult:
    scores: dict[str, np.ndarray]  # method -> [records, questions]
    contributors: dict[str, list[dict]]  # method -> contributor table
    parameters: dict
    seconds: float
    gradient_bytes: int


def projection(config: InfluenceConfig, trainable: int, examples: int) -> int:
    """Per-module sketch size for ``examples`` gradients of ``trainable`` weights: 0 (exact) where they fit."""
    exact_bytes = 4 * trainable * examples
    return config.projection_dim or (config.fallback_dim if exact_bytes > config.max_gradient_bytes else 0)


def compute(
    model,
    train_examples: list,
    held_out: list,
    contributors: list[str],
    *,
    pad_id: int,
    device: str,
    learning_rate: float,
    config: InfluenceConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    loss_fn: LossFn | None = None,
    target: str = "held-out loss (mean per response token)",
    traced: dict | None = None,
) -> InfluenceResult:
    """Scores of ``train_examples`` (trainer Examples, or what ``loss_fn`` takes) on the held-out examples'
    loss (``target`` names it). ``traced``: what attribution/trace.py gathered while training
    (``{"scores": {method: matrix}, "projection": dim, "bytes": n}``), taken as it is."""
    config = config or InfluenceConfig()
    config.validate()
    if len(contributors) != len(train_examples):
        raise ValueError("one contributor per training example")
    if not train_examples or not held_out:
        raise ValueError("influence needs training and held-out examples")
    started = time.monotonic()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    traced = traced or {"scores": {}, "projection": 0, "bytes": 0}
    scores = dict(traced["scores"])
    if set(config.methods) - set(scores) - set(FINAL_ADAPTER):
        raise ValueError("tracincp is gathered while the adapter trains: it cannot be computed afterwards")
    project_to, gradient_bytes = traced["projection"], traced["bytes"]
    if set(config.methods) - set(scores):
        project_to = projection(config, trainable, len(train_examples) + len(held_out))
        common = {"batch_size": config.batch_size, "pad_id": pad_id, "device": device, "loss_fn": loss_fn}
        final, held = _final_adapter_scores(
            model, train_examples, held_out, config, project_to, learning_rate, common, progress
        )
        scores.update(final)
        gradient_bytes = max(gradient_bytes, held)
    tables = {
        method: contributor_table(
            s, contributors, bootstrap=config.bootstrap, seed=config.seed, aggregation=config.aggregation
        )
        for method, s in scores.items()
    }
    parameters = {
        **asdict(config),
        "methods": list(config.methods),
        "projection": f"countsketch-{project_to}" if project_to else "none",
        "learning_rate": learning_rate,
        "target": target,
        "train_examples": len(train_examples),
        "held_out_examples": len(held_out),
        "lora_parameters": trainable,
    }
    return InfluenceResult(scores, tables, parameters, time.monotonic() - started, gradient_bytes)


def _final_adapter_scores(model, train_examples, held_out, config, project_to, learning_rate, common, progress):
    """DataInf and TracIn (FINAL_ADAPTER) from one batched gradient pass at the trained adapter; and the
    bytes the gradients held."""
    capture = GradientCapture(model, project_to, config.seed)
    total = len(train_examples) + len(held_out)
    report = progress or (lambda done, total: None)
    try:
        train = gradients(
            model, train_examples, capture=capture, per_token=False, progress=lambda d: report(d, total), **common
        )
        questions = gradients(
            model,
            held_out,
            capture=capture,
            per_token=True,
            progress=lambda d: report(len(train_examples) + d, total),
            **common,
        )
    finally:
        capture.close()
    held = sum(g.nbytes for g in train) + sum(v.nbytes for v in questions)
    if config.unit_norm:
        norms = np.sqrt(sum(np.einsum("ij,ij->i", g, g) for g in train))[:, None]
        norms[norms == 0] = 1.0
        train = [g / norms for g in train]
    scores = {}
    if "tracin" in config.methods:
        scores["tracin"] = tracin_scores(train, questions, learning_rate)
    if "datainf" in config.methods:
        scores["datainf"] = datainf_scores(train, questions, config.damping, capture.sizes)
    return scores, held


def payouts(amount_cents: int, shares: dict[str, float]) -> dict[str, int]:
    """Split an amount (in cents) by shares with the largest-remainder rule: the parts add up exactly."""
    total = sum(max(s, 0.0) for s in shares.values())
    if amount_cents < 0:
        raise ValueError("the amount must not be negative")
    if total <= 0:
        return {name: 0 for name in shares}
    exact = {name: amount_cents * max(s, 0.0) / total for name, s in shares.items()}
    parts = {name: int(value) for name, value in exact.items()}
    left = amount_cents - sum(parts.values())
    for name in sorted(exact, key=lambda n: (-(exact[n] - parts[n]), n))[:left]:
        parts[name] += 1
    return parts
