"""TracInCP over a run's own steps: each record's influence on the held-out loss, gathered while it trains.
No Django.

TracIn (Pruthi et al. 2020) credits a training record with the held-out loss its updates removed: at every
step the record was trained on, the first-order change of the held-out loss, ``g_question . update``.
Here the update is the record's share of the real AdamW step: its per-example gradient (from the very
forward and backward pass that trained it, so no extra pass over the training set) times the gradient
clipping factor, AdamW's per-weight step size ``lr / (sqrt(v_hat) + eps)`` and the weight Adam's
momentum gives that gradient in this and the later updates (``momentum_weight``). The held-out gradients
are taken at a few anchor steps (the start, every ``every`` steps, the end); the updates of the steps
between two anchors are summed per record and dotted with the mean of the two anchors' gradients (the
trapezoidal rule along the run's path). What is kept between anchors is one (projected) vector a record,
as for the final-adapter methods; the state goes into the run's checkpoints, and a resumed run goes on
adding to it.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable

import numpy as np

from .influence import GradientCapture

HeldOutFn = Callable[[GradientCapture], list]  # capture -> per-module [questions, dim] held-out gradients


class StepTrace:
    """What a run gathers for tracincp: each record's displacement since the last anchor, the scores of the
    closed stretches and the last anchor's held-out gradients."""

    def __init__(self, model, records: int, held_out: HeldOutFn, *, project_to: int, seed: int, every: int, steps: int):
        import torch

        self.capture = GradientCapture(model, project_to, seed)
        self.held_out, self.project_to, self.every, self.steps = held_out, project_to, every, steps
        self.displacement = [torch.zeros(records, dim) for dim in self.capture.dims]
        self.scores: np.ndarray | None = None
        self.anchor: list | None = None
        self.pending: list[tuple[list[int], list]] = []
        self.groups: dict[int, dict] = {}  # id of a LoRA weight -> its optimiser parameter group
        self.seconds = 0.0

    def collect(self, indices: list[int], lengths: list[int]) -> None:
        """After the backward pass of one packed row of records ``indices`` (token counts ``lengths``): keep
        each record's gradient until the optimiser steps."""
        started = time.monotonic()
        self.pending.append((indices, self.capture.per_record(lengths)))
        self.seconds += time.monotonic() - started

    def stepped(self, optimizer, clip: float, step: int, last: bool) -> None:
        """After ``optimizer.step()`` (step number ``step``): add each pending record's update to its
        displacement; take the held-out gradients where an anchor is due (the last is taken by finish)."""
        import torch

        started = time.monotonic()
        if not self.groups:
            self.groups = {id(p): group for group in optimizer.param_groups for p in group["params"]}
        sizes = [self._step_size(optimizer, module.weight) * clip for _, module in self.capture.modules]
        for indices, grads in self.pending:
            rows = torch.tensor(indices)
            for i, grad in enumerate(grads):
                self.displacement[i].index_add_(0, rows, self.capture.sketch(i, grad * sizes[i]))
        self.pending = []
        self.seconds += time.monotonic() - started
        if step % self.every == 0 and not last:
            self.anchor_here()

    def _step_size(self, optimizer, weight):
        """What a gradient taken at this step moves a weight by, all told (flattened): AdamW's step size
        ``lr / (sqrt(v / (1 - beta2^t)) + eps)`` times the gradient's weight in this and the run's later
        momentum averages (``momentum_weight``)."""
        import torch

        group, state = self.groups[id(weight)], optimizer.state[weight]
        step = int(state["step"])
        v_hat = state["exp_avg_sq"].float().reshape(-1) / (1 - group["betas"][1] ** step)
        return group["lr"] / (torch.sqrt(v_hat) + group["eps"]) * momentum_weight(group["betas"][0], step, self.steps)

    def anchor_here(self) -> None:
        """Take the held-out gradients at this point; close the segment since the last anchor."""
        import torch

        started = time.monotonic()
        anchor = [torch.as_tensor(g) for g in self.held_out(self.capture)]
        if self.anchor is not None:
            segment = sum(
                (d @ ((a + b) / 2).T).double().numpy()
                for d, a, b in zip(self.displacement, self.anchor, anchor, strict=True)
            )
            self.scores = segment if self.scores is None else self.scores + segment
            for d in self.displacement:
                d.zero_()
        self.anchor = anchor
        self.seconds += time.monotonic() - started

    def finish(self) -> dict:
        """Takes the last anchor and removes the hooks: ``traced`` for attribution.influence.compute."""
        self.anchor_here()
        self.capture.close()
        held = sum(d.numel() * 4 for d in self.displacement) + sum(a.numel() * 4 for a in self.anchor)
        return {
            "scores": {"tracincp": self.scores},
            "projection": self.project_to,
            "bytes": held,
            "seconds": self.seconds,
        }

    def state(self) -> dict:
        return {"displacement": self.displacement, "scores": self.scores, "anchor": self.anchor}

    def restore(self, state: dict) -> None:
        self.displacement, self.scores, self.anchor = state["displacement"], state["scores"], state["anchor"]


@functools.cache
def momentum_weight(beta: float, step: int, steps: int) -> float:
    """How much of a gradient taken at ``step`` Adam's bias-corrected first moments carry into the updates
    of that step and the later ones up to ``steps``: ``sum_s (1 - beta) beta^(s - step) / (1 - beta^s)``
    (over 1 for the first steps, whose averages the bias correction scales up; under 1 for the last ones).
    The terms past ``beta^k < 1e-9`` are left out, so a long run costs a few hundred terms a step."""
    horizon = math.ceil(math.log(1e-9) / math.log(beta)) if 0 < beta < 1 else 0
    last = min(max(steps, step), step + horizon)
    return sum((1 - beta) * beta ** (s - step) / (1 - beta**s) for s in range(step, last + 1))
