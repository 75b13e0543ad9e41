"""The fine-tune trainer: LoRA or QLoRA on a local causal LM, resumable, evaluated. No Django.

    python -m training.trainer CONFIG.json            # runs from the command line too

Data: JSONL records (see training/examples.py). Each batch is packed into one row without padding
and only response tokens count in the loss (training/packing.py). The held-out loss is measured every
epoch; at the end the base model and the fine-tune answer questions and are scored
(training/evaluation.py, training/taskeval.py), and each record's influence is measured
(attribution/influence.py).

Checkpoints (adapter, optimiser, scheduler, RNG states and data position) are written every
``checkpoint_every`` steps (at least 4 times per run, and at least every ``checkpoint_every_s``
seconds) to ``OUTPUT/checkpoint`` (training/checkpoints.py); a run started again on the same output
directory continues from there, not from step 0.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from training import distributed, modeling, packing
from training.checkpoints import report_step, restore_adapter, save_checkpoint, start_run
from training.config import Cancelled, ProgressFn, Run, TrainConfig
from training.evaluation import evaluate, held_out_check, probe_questions, summary_line
from training.examples import Example, epoch_batches, load_examples, split
from training.influence_run import attribute, tracer
from training.modeling import autocast, device_name, load_model

__all__ = ["Cancelled", "TrainConfig", "attribute_saved", "device_name", "train"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def train_and_held_out(
    tokenizer, config: TrainConfig, data_path, eval_path=None
) -> tuple[list[Example], list[Example]]:
    """The training set and the held-out set: a seeded split of the data, or the given held-out file."""
    examples = load_examples(tokenizer, data_path, config.max_seq_length)
    if eval_path is not None:
        held_out = load_examples(tokenizer, eval_path, config.max_seq_length)
        if not examples or not held_out:
            raise ValueError("no usable training or held-out records")
        return examples, held_out
    if len(examples) < (2 if config.eval_fraction else 1):
        raise ValueError("fewer than 2 usable records: nothing to train and evaluate on")
    return split(examples, config.eval_fraction, config.seed, config.max_eval_records)


def attribute_saved(
    config: TrainConfig,
    data_path: Path | str,
    adapter_dir: Path | str,
    output_dir: Path | str,
    progress: ProgressFn | None = None,
    eval_path: Path | str | None = None,
) -> dict:
    """Attribution for an adapter trained earlier: the same data, split and held-out set as its run."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    config.validate()
    if not config.influence_methods:
        raise ValueError("name at least one influence method")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model, tokenizer, compute = load_model(config)
    set_peft_model_state_dict(model, load_file(str(Path(adapter_dir) / "adapter_model.safetensors")))
    loss = {}
    if config.objective in ("dpo", "orpo"):
        from training import preference, preference_run

        train_set, eval_set = preference_run.pairs_for(tokenizer, config, data_path, eval_path)
        loss = {
            "loss_fn": preference.influence_loss(config.objective, config.beta, tokenizer.pad_token_id),
            "target": preference.influence_target(config.objective),
        }
    else:
        train_set, eval_set = train_and_held_out(tokenizer, config, data_path, eval_path)
    run = Run(config, model, tokenizer, device_name(), compute, train_set, eval_set, None, None, 0, {}, {})
    return attribute(run, output_dir, progress or (lambda event: None), **loss)


def setup(config: TrainConfig, data_path, eval_path, checkpoint_dir: Path, log: Callable[[str], None]) -> Run:
    """Load the model and data, build the optimiser and schedule, and resume from a checkpoint if any."""
    import torch

    random.seed(config.seed)
    torch.manual_seed(config.seed)
    device = device_name()
    distributed.start(device)
    sharded = distributed.sharded(config)
    model, tokenizer, compute = load_model(
        config, "device" if not sharded else "meta" if distributed.world()[0] else "host"
    )
    compute.update(sharded=sharded, weights_bytes=sum(p.numel() * p.element_size() for p in model.parameters()))
    # Not with a sharded base: compiled layers between FSDP's gathers trained the bundled model at 1.71 samples/s
    # on 2 CPU processes against 2.19 eager (bench/train.py, 24 steps).
    compute["compiled"] = modeling.compiles(config, device, compute["method"]) and not sharded
    if compute["compiled"]:
        modeling.compile_layers(model)
    precision = "bf16" if compute["bf16"] else "fp32"
    compiled = ", compiled layers" if compute["compiled"] else ""
    log(
        f"Loaded {Path(config.base_model_path).name} for {compute['method'].upper()} on {device} ({precision}{compiled})"
    )
    if sharded:
        compute["weights_held_bytes"] = distributed.shard(model, device)
        log(
            f"Sharded the base model over {distributed.world()[1]} processes (FSDP): each holds "
            f"{compute['weights_held_bytes'] / 2**20:.1f} MB of its {compute['weights_bytes'] / 2**20:.1f} MB of weights"
        )
    train_set, eval_set = train_and_held_out(tokenizer, config, data_path, eval_path)
    steps_per_epoch = max(1, math.ceil(len(train_set) / config.batch_size) // config.gradient_accumulation)
    total_steps = config.max_steps or max(1, math.ceil(steps_per_epoch * config.epochs))
    trainable = [p for p in model.parameters() if p.requires_grad]
    log(
        f"{len(train_set)} training and {len(eval_set)} held-out examples; {total_steps} steps; "
        f"{sum(p.numel() for p in trainable):,} trainable parameters"
    )
    trace = tracer(config, model, tokenizer.pad_token_id, device, compute, train_set, eval_set, total_steps)
    return start_run(
        config, model, tokenizer, device, compute, train_set, eval_set, total_steps, checkpoint_dir, log, trace
    )


def train_steps(run: Run, checkpoint_dir: Path, report: ProgressFn, stop: Callable[[], bool]) -> None:
    """Optimiser steps until the step budget is spent or the held-out loss stops improving."""
    import torch

    config, position, model = run.config, run.position, run.model
    parameters = [p for p in model.parameters() if p.requires_grad]
    replicas = distributed.Replicas(model, run.device, run.compute["sharded"])
    lengths = [len(e.input_ids) for e in run.train_set]
    model.train()
    started = saved_at = time.monotonic()
    every = max(1, min(config.checkpoint_every, run.total_steps // 4))
    tokens_at_start, step_at_start = position["tokens"], position["step"]
    if run.trace is not None and run.trace.anchor is None:
        run.trace.anchor_here()
    while position["step"] < run.total_steps:
        batches = epoch_batches(lengths, config.batch_size, config.seed, position["epoch"])
        while position["batch"] < len(batches) and position["step"] < run.total_steps:
            if stop():
                raise Cancelled
            group = batches[position["batch"] : position["batch"] + config.gradient_accumulation]
            chunks = [[run.train_set[i] for i in batch] for batch in group]
            denominator = max(sum(packing.target_count(chunk) for chunk in chunks), 1)
            step_loss = 0.0
            for i, chunk in enumerate(chunks):
                # Every response token weighs the same, whatever batch of the step it fell in. Compiled layers
                # run without autocast: the bf16 base computes in bf16 as it is, and peft computes the adapters
                # in their fp32, whose small matmuls a CPU does 2-4x faster than bf16's.
                with autocast(run.device, run.compute["bf16"] and not run.compute["compiled"]):
                    loss = replicas.loss(chunk, last=i == len(chunks) - 1) / denominator
                loss.backward()
                step_loss += loss.item()
                if run.trace is not None:
                    run.trace.collect(group[i], [len(e.input_ids) for e in chunk])
            replicas.synchronise(parameters)
            norm = torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm, foreach=True)
            run.optimizer.step()
            if run.trace is not None:
                clip = min(1.0, config.max_grad_norm / (float(norm) + 1e-6))
                run.trace.stepped(run.optimizer, clip, position["step"] + 1, position["step"] + 1 == run.total_steps)
            run.scheduler.step()
            run.optimizer.zero_grad(set_to_none=True)
            position["batch"] += len(group)
            position["step"] += 1
            position["tokens"] += sum(len(e.input_ids) for chunk in chunks for e in chunk)
            figures = {"loss": round(replicas.total(step_loss), 5)}
            report_step(run, report, figures, time.monotonic() - started, tokens_at_start, step_at_start)
            epoch_end = position["batch"] >= len(batches)
            due = position["step"] % config.eval_every == 0 if config.eval_every else epoch_end
            if run.eval_set and due and replicas.rank_zeros(checked(run, report)):
                best = run.history["best"]
                report(
                    {
                        "event": "log",
                        "message": f"Held-out loss has not improved on step {best['step']}'s "
                        f"{best['loss']:.3f} for {config.early_stopping_patience} checks: stopping early",
                    }
                )
                return
            due = position["step"] % every == 0 or time.monotonic() - saved_at >= config.checkpoint_every_s
            if due and position["step"] < run.total_steps and replicas.rank == 0:
                save_checkpoint(run, checkpoint_dir)
                saved_at = time.monotonic()
                report({"event": "checkpoint", "step": position["step"]})
        if position["batch"] >= len(batches):
            position["epoch"] += 1
            position["batch"] = 0


def checked(run: Run, report: ProgressFn) -> bool:
    with modeling.eager(run.compute):
        return held_out_check(run, report)


def evaluated(run: Run, output_dir: Path | None, probes, report: ProgressFn, stop) -> tuple[dict, dict | None]:
    """The base model's and the fine-tune's scores, and each record's influence (written to ``output_dir``;
    None: a rank other than 0, which computes along and keeps nothing)."""
    import tempfile

    def log(message: str) -> None:
        report({"event": "log", "message": message})

    report({"event": "evaluating"})
    log("Evaluating the base model and the fine-tune: held-out loss and answers to questions")
    with modeling.eager(run.compute):
        metrics = evaluate(run, probe_questions(run.tokenizer, probes, run.config), stop)
        if not run.config.influence_methods:
            return metrics, None
        log(f"Measuring each record's influence on the held-out loss ({', '.join(run.config.influence_methods)})")
        with tempfile.TemporaryDirectory() if output_dir is None else contextlib.nullcontext(output_dir) as folder:
            attribution = attribute(run, Path(folder), report)
        if stop():
            raise Cancelled
    return metrics, attribution


def train(
    config: TrainConfig,
    data_path: Path | str,
    output_dir: Path | str,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    eval_path: Path | str | None = None,
    probes: dict[str, Path | str] | None = None,
) -> dict:
    """Train, evaluate, attribute and save the adapter; return the metrics. Resumes from OUTPUT/checkpoint.
    ``eval_path``: held-out records to evaluate and attribute on, instead of a split of the data;
    ``probes``: named question files (JSONL records) whose answers are scored too. Under torchrun
    (training/distributed.py) every rank trains; rank 0 alone reports and goes on to evaluate, attribute and
    save, and the others return {} when training ends (with a sharded base, after evaluating along)."""
    started = time.monotonic()
    config.validate()
    if config.objective != "sft":
        from training import preference_run

        return preference_run.train(config, data_path, output_dir, progress, should_stop, eval_path, probes)
    rank, size = distributed.world()
    if size > config.batch_size:
        raise ValueError(f"a batch of {config.batch_size} records cannot be shared by {size} processes")
    report = (progress if rank == 0 else None) or (lambda event: None)
    stop = should_stop or (lambda: False)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = output_dir / "checkpoint"

    def log(message: str) -> None:
        report({"event": "log", "message": message})

    report({"event": "loading"})
    run = setup(config, data_path, eval_path, checkpoint_dir, log)
    if run.position["step"]:
        report({"event": "resumed", "step": run.position["step"]})
    train_seconds = time.monotonic()
    sharded = run.compute["sharded"]
    try:
        train_steps(run, checkpoint_dir, report, stop)
        run.compute["peak_bytes"] = distributed.peaks(run.device)
        if size > 1:
            each = ", ".join(f"{b / 2**20:,.0f}" for b in run.compute["peak_bytes"])
            log(f"Peak memory of each process while training: {each} MB")
    finally:
        if not sharded:
            distributed.stop()
    if rank and not sharded:
        return {}  # rank 0 evaluates, attributes and saves
    train_seconds = time.monotonic() - train_seconds
    best = run.history["best"] if config.early_stopping_patience else None
    if best and run.best_state is not None and best["step"] != run.position["step"]:
        restore_adapter(run.model, run.best_state)
        log(f"Keeping the adapter of step {best['step']}, whose held-out loss {best['loss']:.3f} was the best")
    try:
        # A sharded base needs every rank in every forward: they all evaluate and attribute, in step.
        metrics, attribution = evaluated(run, output_dir if rank == 0 else None, probes, report, stop)
    finally:
        distributed.stop()
    if rank:
        return {}
    adapter_dir = output_dir / "adapter"
    shutil.rmtree(adapter_dir, ignore_errors=True)
    run.model.save_pretrained(adapter_dir)
    metrics.update(
        steps=run.position["step"],
        epochs=round(run.position["step"] / max(1, run.total_steps) * config.epochs, 3)
        if not config.max_steps
        else None,
        total_steps=run.total_steps,
        best_step=best["step"] if best else run.position["step"],
        train_seconds=round(train_seconds, 1),
        wall_seconds=round(time.monotonic() - started, 1),
        influence=attribution,
    )
    (output_dir / "config.json").write_text(json.dumps({**asdict(config), "resolved": run.compute}, indent=2))
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    log(summary_line(metrics))
    return metrics


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Fine-tune a LoRA/QLoRA adapter from a config file.")
    parser.add_argument("config", help="JSON file: TrainConfig fields plus data_path, output_dir and eval_path")
    parser.add_argument("--events", help="append the run's events to this file as JSON lines (rank 0's)")
    args = parser.parse_args(argv)
    raw = json.loads(Path(args.config).read_text())
    data_path, output_dir, eval_path = raw.pop("data_path"), raw.pop("output_dir"), raw.pop("eval_path", None)
    events = open(args.events, "a") if args.events else None  # noqa: SIM115 - open for the whole run

    def show(event: dict) -> None:
        if events:
            events.write(json.dumps(event) + "\n")
            events.flush()
        elif event["event"] == "step":
            print(
                f"step {event['step']}/{event['total_steps']} loss {event['loss']:.4f} "
                f"lr {event['lr']:.2e} {event['tokens_per_s']:.0f} tok/s",
                flush=True,
            )
        elif event["event"] == "log":
            print(event["message"], flush=True)

    metrics = train(TrainConfig.from_dict(raw), data_path, output_dir, progress=show, eval_path=eval_path)
    if metrics:  # rank 0
        print(json.dumps({k: metrics[k] for k in ("steps", "base", "tuned")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
