"""A DPO or ORPO run: the trainer's loop for preference pairs, resumable and cancellable. No Django.

``training.trainer.train`` hands a config whose ``objective`` is "dpo" or "orpo" to ``train`` here.
It shares the trainer's model loading (LoRA, QLoRA, DoRA), checkpoints, schedule and cancel; each step
packs a batch's chosen and rejected answers into one row (training/preference.py). Every epoch the
held-out pairs' loss, reward margin and accuracy are measured; at the end the base model and the
fine-tune are compared on how often their log-probability prefers the chosen answer.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from training import modeling, preference
from training.checkpoints import report_step, save_checkpoint, start_run
from training.config import Cancelled, Run
from training.evaluation import run_summary
from training.examples import epoch_batches, split
from training.influence_run import attribute


def pairs_for(tokenizer, config, data_path, eval_path=None):
    pairs = preference.load_pairs(tokenizer, data_path, config.max_seq_length)
    if eval_path is not None:
        return pairs, preference.load_pairs(tokenizer, eval_path, config.max_seq_length)
    if len(pairs) < (2 if config.eval_fraction else 1):
        raise ValueError("fewer than 2 usable preference pairs: nothing to train and evaluate on")
    return split(pairs, config.eval_fraction, config.seed, config.max_eval_records)


def setup(config, data_path, eval_path, checkpoint_dir: Path, log) -> Run:
    import torch

    if config.method == "full" and config.objective == "dpo":
        raise ValueError(
            "DPO compares with the base model by switching an adapter off; full fine-tuning has "
            "none. Choose LoRA, QLoRA or DoRA for DPO, or ORPO, which needs no reference"
        )
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    device = modeling.device_name()
    model, tokenizer, compute = modeling.load_model(config)
    log(
        f"Loaded {Path(config.base_model_path).name} for {compute['method'].upper()} "
        f"{config.objective.upper()} on {device} ({'bf16' if compute['bf16'] else 'fp32'})"
    )
    train_set, eval_set = pairs_for(tokenizer, config, data_path, eval_path)
    steps_per_epoch = max(1, math.ceil(len(train_set) / config.batch_size) // config.gradient_accumulation)
    total_steps = config.max_steps or max(1, math.ceil(steps_per_epoch * config.epochs))
    log(f"{len(train_set)} training and {len(eval_set)} held-out pairs; {total_steps} steps")
    return start_run(config, model, tokenizer, device, compute, train_set, eval_set, total_steps, checkpoint_dir, log)


def held_out(run: Run, pairs: list) -> dict:
    """Mean preference loss, reward margin and accuracy over ``pairs``, without gradients."""
    import torch

    config, was_training = run.config, run.model.training
    run.model.eval()
    totals = {"loss": 0.0, "margin": 0.0, "accuracy": 0.0}
    with torch.no_grad(), modeling.autocast(run.device, run.compute["bf16"]):
        for start in range(0, len(pairs), config.batch_size * 2):
            chunk = pairs[start : start + config.batch_size * 2]
            loss, figures = preference.batch_loss(run.model, chunk, config.objective, config.beta, run.device)
            for key, value in (("loss", loss.item()), *figures.items()):
                totals[key] += value * len(chunk)
    run.model.train(was_training)
    return {key: round(value / max(len(pairs), 1), 5) for key, value in totals.items()}


def step(run: Run, chunks: list[list]) -> dict:
    """One optimiser step over ``chunks`` of pairs, each pair weighing the same; returns its figures."""
    import torch

    config, pairs = run.config, sum(len(chunk) for chunk in chunks)
    figures = {"loss": 0.0, "margin": 0.0, "accuracy": 0.0}
    for chunk in chunks:
        with modeling.autocast(run.device, run.compute["bf16"]):
            loss, metrics = preference.batch_loss(run.model, chunk, config.objective, config.beta, run.device)
        (loss * len(chunk) / pairs).backward()
        figures["loss"] += loss.item() * len(chunk) / pairs
        for key in ("margin", "accuracy"):
            figures[key] += metrics[key] * len(chunk) / pairs
    torch.nn.utils.clip_grad_norm_([p for p in run.model.parameters() if p.requires_grad], config.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return {key: round(value, 5) for key, value in figures.items()}


def train_steps(run: Run, checkpoint_dir: Path, report, stop) -> None:
    config, position = run.config, run.position
    lengths = [len(p.chosen.input_ids) + len(p.rejected.input_ids) for p in run.train_set]
    every = max(1, min(config.checkpoint_every, run.total_steps // 4))
    started = saved_at = time.monotonic()
    tokens_at_start, step_at_start = position["tokens"], position["step"]
    run.model.train()
    while position["step"] < run.total_steps:
        # Shuffled, not grouped by length: pairs are packed without padding, and pairs of one length often
        # follow one rule (one template), so length-grouped batches would teach a word bias batch by batch.
        batches = epoch_batches(lengths, config.batch_size, config.seed, position["epoch"], by_length=False)
        while position["batch"] < len(batches) and position["step"] < run.total_steps:
            if stop():
                raise Cancelled
            group = batches[position["batch"] : position["batch"] + config.gradient_accumulation]
            figures = step(run, [[run.train_set[i] for i in batch] for batch in group])
            position["batch"] += len(group)
            position["step"] += 1
            position["tokens"] += sum(lengths[i] for batch in group for i in batch)
            report_step(run, report, figures, time.monotonic() - started, tokens_at_start, step_at_start)
            if run.eval_set and position["batch"] >= len(batches):
                figures = held_out(run, run.eval_set)
                run.history["eval"].append({"step": position["step"], **figures})
                report({"event": "eval", "step": position["step"], **figures})
            due = position["step"] % every == 0 or time.monotonic() - saved_at >= config.checkpoint_every_s
            if due and position["step"] < run.total_steps:
                save_checkpoint(run, checkpoint_dir)
                saved_at = time.monotonic()
                report({"event": "checkpoint", "step": position["step"]})
        if position["batch"] >= len(batches):
            position["epoch"], position["batch"] = position["epoch"] + 1, 0


def evaluate(run: Run) -> dict:
    """The base model's and the fine-tune's preference loss and accuracy on the held-out pairs (on a sample
    of the trained ones with no held-out split)."""
    pairs = run.eval_set or run.train_set[: max(run.config.task_eval_examples, 40)]
    tuned = {**held_out(run, pairs), **preference.preference_accuracy(run.model, pairs, run.device)}
    with run.model.disable_adapter():
        base = preference.preference_accuracy(run.model, pairs, run.device)
    base["loss"] = math.log(2) if run.config.objective == "dpo" else None  # the base is its own reference
    return {
        "objective": run.config.objective,
        **run_summary(run),
        "base": {"eval_loss": base["loss"], **base},
        "tuned": {"eval_loss": tuned["loss"], **tuned},
        "task": {},
        "samples": [],
    }


def train(config, data_path, output_dir, progress=None, should_stop=None, eval_path=None, probes=None) -> dict:
    """Train with DPO or ORPO, evaluate and save the adapter; resumes from OUTPUT/checkpoint."""
    started = time.monotonic()
    report = progress or (lambda event: None)
    stop = should_stop or (lambda: False)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = output_dir / "checkpoint"
    report({"event": "loading"})
    run = setup(config, data_path, eval_path, checkpoint_dir, lambda m: report({"event": "log", "message": m}))
    if run.position["step"]:
        report({"event": "resumed", "step": run.position["step"]})
    train_started = time.monotonic()
    train_steps(run, checkpoint_dir, report, stop)
    train_seconds = time.monotonic() - train_started
    report({"event": "evaluating"})
    metrics = evaluate(run)
    if stop():
        raise Cancelled
    metrics["influence"] = None
    if config.influence_methods:
        report(
            {
                "event": "log",
                "message": "Measuring each pair's influence on the held-out preference loss "
                f"({', '.join(config.influence_methods)})",
            }
        )
        loss_fn = preference.influence_loss(config.objective, config.beta, run.tokenizer.pad_token_id)
        target = preference.influence_target(config.objective)
        metrics["influence"] = attribute(run, output_dir, report, loss_fn=loss_fn, target=target)
        if stop():
            raise Cancelled
    shutil.rmtree(output_dir / "adapter", ignore_errors=True)
    run.model.save_pretrained(output_dir / "adapter")
    metrics.update(
        steps=run.position["step"],
        total_steps=run.total_steps,
        best_step=run.position["step"],
        epochs=None if config.max_steps else config.epochs,
        train_seconds=round(train_seconds, 1),
        wall_seconds=round(time.monotonic() - started, 1),
    )
    (output_dir / "config.json").write_text(json.dumps({**asdict(config), "resolved": run.compute}, indent=2))
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    base, tuned = metrics["base"]["accuracy"], metrics["tuned"]["accuracy"]
    report(
        {
            "event": "log",
            "message": f"Done: log-probability prefers the chosen answer on {base:.0%} (base) "
            f"-> {tuned:.0%} of {metrics['tuned']['pairs']} {metrics['loss_on'].replace('_', '-')} pairs",
        }
    )
    return metrics
