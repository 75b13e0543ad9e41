"""Checkpoints of a training run: adapter, optimiser, scheduler, RNG states and data position, written so
that a kill at any moment leaves one whole checkpoint; and the adapter weights kept in memory. No Django."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

from training.config import Run


def _rng_state() -> dict:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run: Run, directory: Path) -> None:
    """Written beside the old one and renamed over it: a kill at any moment leaves one whole checkpoint."""
    import torch

    staging = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if run.compute.get("sharded"):
        # The adapter's weights as they are: a sharded model's state_dict() would reshard the base's root weights
        # (left gathered after a held-out check) on this rank alone, and the next forward's gathers would no
        # longer match the other ranks'.
        run.model.save_pretrained(staging / "adapter", state_dict=adapter_state(run.model))
    else:
        run.model.save_pretrained(staging / "adapter")
    torch.save(
        {
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "rng": _rng_state(),
            "position": run.position,
            "history": run.history,
            "best_state": run.best_state,
            "trace": run.trace.state() if run.trace is not None else None,
        },
        staging / "state.pt",
    )
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    staging.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(model, optimizer, scheduler, directory: Path, trace=None) -> tuple[dict, dict, dict | None]:
    import torch

    from training.full import load_trained_weights

    load_trained_weights(model, directory / "adapter")
    state = torch.load(directory / "state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    if trace is not None and state.get("trace"):
        trace.restore(state["trace"])
    return state["position"], state["history"], state.get("best_state")


def adapter_state(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def restore_adapter(model, state: dict) -> None:
    import torch

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name in state:
                parameter.copy_(state[name])


def start_run(
    config, model, tokenizer, device, compute, train_set, eval_set, total_steps, checkpoint_dir: Path, log, trace=None
) -> Run:
    """A run's optimiser and schedule over the trainable weights, resumed from ``checkpoint_dir`` if it holds one;
    ``trace``: the attribution.trace.StepTrace gathering tracincp, resumed with it."""
    import torch
    from transformers import get_scheduler

    if config.loraplus_lr_ratio > 1 and compute["method"] != "full":
        from peft.optimizers import create_loraplus_optimizer

        optimizer = create_loraplus_optimizer(
            model,
            torch.optim.AdamW,
            lr=config.learning_rate,
            loraplus_lr_ratio=config.loraplus_lr_ratio,
            weight_decay=config.weight_decay,
            fused=True,
        )
    else:
        trainable = [p for p in model.parameters() if p.requires_grad]
        # Fused: one kernel for all weights instead of a dozen small ones a tensor (420 tensors for LoRA on
        # the bundled model: 33 ms of a 500 ms step of one record on this CPU, 9 ms fused).
        optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay, fused=True)
    scheduler = get_scheduler(
        config.lr_scheduler if config.lr_scheduler != "constant" else "constant_with_warmup",
        optimizer,
        num_warmup_steps=int(total_steps * config.warmup_ratio),
        num_training_steps=total_steps,
    )
    position, history = {"step": 0, "epoch": 0, "batch": 0, "tokens": 0}, {"train": [], "eval": [], "best": None}
    run = Run(
        config,
        model,
        tokenizer,
        device,
        compute,
        train_set,
        eval_set,
        optimizer,
        scheduler,
        total_steps,
        position,
        history,
        trace=trace,
    )
    if (checkpoint_dir / "state.pt").exists():
        run.position, run.history, run.best_state = load_checkpoint(model, optimizer, scheduler, checkpoint_dir, trace)
        run.history.setdefault("best", None)
        log(f"Resumed from the checkpoint at step {run.position['step']} of {total_steps}")
    return run


def report_step(run: Run, report, figures: dict, elapsed: float, tokens_at_start: int, step_at_start: int) -> None:
    """Keep the finished step's figures in the run's history and report them with the time left."""
    position = run.position
    point = {
        "step": position["step"],
        **figures,
        "lr": run.scheduler.get_last_lr()[0],
        "tokens_per_s": round((position["tokens"] - tokens_at_start) / elapsed, 1) if elapsed else 0.0,
    }
    run.history["train"].append(point)
    remaining = round(elapsed / (position["step"] - step_at_start) * (run.total_steps - position["step"]), 1)
    report(
        {
            "event": "step",
            **point,
            "total_steps": run.total_steps,
            "epoch": position["epoch"],
            "elapsed_s": round(elapsed, 1),
            "remaining_s": remaining,
        }
    )
