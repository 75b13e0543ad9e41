"""The fine-tune trainer: LoRA or QLoRA on a local causal LM, resumable, evaluated. No Django.

    python -m training.trainer CONFIG.json            # runs from the command line too

Data: JSONL records (see training/examples.py). Each batch is packed into one row without padding
and only response tokens count in the loss (training/packing.py). The held-out loss is measured every
epoch; at the end the base model and the fine-tune answer questions and are scored
(training/taskeval.py), and each record's influence is measured (attribution/influence.py).

Checkpoints (adapter, optimiser, scheduler, RNG states and data position) are written every
``checkpoint_every`` steps (at least 4 times per run, and at least every ``checkpoint_every_s``
seconds) to ``OUTPUT/checkpoint``; a run started again on the same output
directory continues from there, not from step 0.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from training import packing, taskeval
from training.examples import (  # noqa: F401 - the trainer's data API, re-exported for callers
    IGNORE,
    Example,
    collate,
    encode,
    epoch_batches,
    load_examples,
    load_records,
    load_rows,
    split,
    template_ids,
    to_messages,
)
from training.modeling import autocast, device_name, fast_bf16, load_model, pick_method  # noqa: F401

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class Cancelled(Exception):
    """The caller asked the run to stop."""


@dataclass
class TrainConfig:
    base_model_path: str
    # "qlora" (4-bit NF4 base, double quantisation), "lora", or "auto": the faster that fits (see pick_method)
    method: str = "qlora"  # also "dora" (LoRA with weight decomposition) and "full" (every weight trains)
    objective: str = "sft"  # "sft" (supervised), or "dpo" / "orpo" on preference records (training/preference.py)
    beta: float = 0.1  # DPO's and ORPO's beta
    precision: str = "auto"  # "auto": bf16 where the device computes it fast, else fp32; or "bf16", "fp32"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"  # cosine, linear or constant
    warmup_ratio: float = 0.05
    epochs: float = 1.0
    batch_size: int = 4
    gradient_accumulation: int = 1
    max_seq_length: int = 512
    eval_fraction: float = 0.05  # held out for generalisation (at most max_eval_records); 0: train on all
    max_eval_records: int = 100
    seed: int = 42
    checkpoint_every: int = 20  # steps; and at least 4 times per run, and every checkpoint_every_s seconds
    checkpoint_every_s: float = 300.0
    eval_every: int = 0  # held-out loss every N steps; 0: once an epoch
    early_stopping_patience: int = 0  # stop after N held-out checks without a better loss; 0: never
    max_steps: int = 0  # 0: as many as the epochs need
    eval_prompts: int = 5  # answers shown side by side (base and fine-tune) per evaluation set
    task_eval_examples: int = 40  # questions answered and scored per set (held-out, trained); 0: none
    max_new_tokens: int = 64
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    influence_methods: list[str] = field(default_factory=lambda: ["datainf", "tracin"])  # []: no attribution
    influence_projection_dim: int = 0  # 0: exact LoRA gradients when they fit in memory
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
        return cls(**data)

    def validate(self) -> None:
        problems = []
        if self.method not in ("qlora", "lora", "dora", "full", "auto"):
            problems.append("method must be qlora, lora, dora, full or auto")
        if self.objective not in ("sft", "dpo", "orpo") or self.beta <= 0:
            problems.append("objective must be sft, dpo or orpo, with beta > 0")
        if self.precision not in ("auto", "bf16", "fp32"):
            problems.append("precision must be auto, bf16 or fp32")
        if self.lora_r < 1 or self.lora_alpha < 1:
            problems.append("rank and alpha must be at least 1")
        if not 0 <= self.lora_dropout < 1:
            problems.append("dropout must be in [0, 1)")
        if not 0 < self.learning_rate < 1:
            problems.append("learning rate must be in (0, 1)")
        if self.lr_scheduler not in ("cosine", "linear", "constant"):
            problems.append("schedule must be cosine, linear or constant")
        if self.batch_size < 1 or self.gradient_accumulation < 1:
            problems.append("batch size and gradient accumulation must be at least 1")
        if self.epochs <= 0 and self.max_steps <= 0:
            problems.append("train for some epochs or steps")
        if not 16 <= self.max_seq_length <= 32768:
            problems.append("max sequence length must be between 16 and 32768")
        if not 0 <= self.eval_fraction < 0.5:
            problems.append("evaluation split must be between 0 and 0.5")
        if self.task_eval_examples < 0 or self.early_stopping_patience < 0:
            problems.append("task evaluation size and early-stopping patience cannot be negative")
        if set(self.influence_methods) - {"datainf", "tracin"}:
            problems.append("influence methods are datainf and tracin")
        if problems:
            raise ValueError("; ".join(problems))


# Training ------------------------------------------------------------------------------------

ProgressFn = Callable[[dict], None]


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
    run.model.save_pretrained(staging / "adapter")
    torch.save(
        {
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "rng": _rng_state(),
            "position": run.position,
            "history": run.history,
            "best_state": run.best_state,
        },
        staging / "state.pt",
    )
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    staging.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(model, optimizer, scheduler, directory: Path) -> tuple[dict, dict, dict | None]:
    import torch

    from training.full import load_trained_weights

    load_trained_weights(model, directory / "adapter")
    state = torch.load(directory / "state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return state["position"], state["history"], state.get("best_state")


def evaluate_loss(model, examples: list[Example], batch_size: int, device: str, bf16: bool = False) -> float:
    """Mean loss per response token over ``examples``."""
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), autocast(device, bf16):
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            total += packing.summed_loss(model, packing.pack(chunk), device).item()
            count += packing.target_count(chunk)
    model.train(was_training)
    return total / max(count, 1)


def questions_from(tokenizer, examples: list[Example], n: int, seed: int) -> list[dict]:
    """A fixed, seeded sample of ``n`` examples as questions: the prompt's ids and the reference answer."""
    prompted = [e for e in examples if e.prompt]
    chosen = sorted(random.Random(seed).sample(range(len(prompted)), min(n, len(prompted))))
    return [
        {"prompt_ids": template_ids(tokenizer, prompted[i].prompt, generation_prompt=True),
         "question": prompted[i].prompt[-1]["content"], "reference": prompted[i].reference}
        for i in chosen
    ]  # fmt: skip


def datasets(tokenizer, config: TrainConfig, data_path, eval_path=None) -> tuple[list[Example], list[Example]]:
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


def attribute(run: Run, output_dir: Path, report: ProgressFn, **loss) -> dict:
    """Influence of each training record on the held-out loss (on the trained sample's, with no held-out
    split); writes influence.json (and the per-question scores as influence.npz) and returns the summary
    the job keeps. ``loss``: another loss than the supervised one (``loss_fn`` and ``target`` of
    ``attribution.influence.compute``)."""
    import numpy as np

    from attribution import influence

    config, train_set = run.config, run.train_set
    questions = run.eval_set or [run.train_set[i] for i in range(min(len(train_set), 40))]
    total = len(train_set) + len(questions)
    report({"event": "attributing", "done": 0, "total": total})
    # No autocast: per-example gradients are taken in the adapter's fp32.
    result = influence.compute(
        run.model,
        train_set,
        questions,
        [str(e.source.get("contributor", "unknown")) for e in train_set],
        pad_id=run.tokenizer.pad_token_id,
        device=run.device,
        learning_rate=config.learning_rate,
        config=influence.InfluenceConfig(
            methods=tuple(config.influence_methods),
            projection_dim=config.influence_projection_dim,
            batch_size=config.batch_size * 2,
            seed=config.seed,
        ),
        progress=lambda done, total: report({"event": "attributing", "done": done, "total": total}),
        **loss,
    )
    summary = {
        "default_method": next(m for m in influence.METHODS if m in result.scores),
        "parameters": result.parameters,
        "seconds": round(result.seconds, 3),
        "gradient_bytes": result.gradient_bytes,
        "contributors": result.contributors,
    }
    records = [
        {"content_hash": e.source.get("content_hash"), "contributor": e.source.get("contributor"),
         **{m: float(s[i].mean()) for m, s in result.scores.items()}}
        for i, e in enumerate(train_set)
    ]  # fmt: skip
    (output_dir / "influence.json").write_text(json.dumps({**summary, "records": records}, indent=1))
    np.savez_compressed(output_dir / "influence.npz", **{m: s.astype(np.float32) for m, s in result.scores.items()})
    return summary


def attribute_saved(config: TrainConfig, data_path: Path | str, adapter_dir: Path | str, output_dir: Path | str,
                    progress: ProgressFn | None = None, eval_path: Path | str | None = None) -> dict:  # fmt: skip
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
        loss = {"loss_fn": preference.influence_loss(config.objective, config.beta, tokenizer.pad_token_id),
                "target": preference.influence_target(config.objective)}  # fmt: skip
    else:
        train_set, eval_set = datasets(tokenizer, config, data_path, eval_path)
    run = Run(config, model, tokenizer, device_name(), compute, train_set, eval_set, None, None, 0, {}, {})
    return attribute(run, output_dir, progress or (lambda event: None), **loss)


@dataclass
class Run:
    """What a training run holds between its phases."""

    config: TrainConfig
    model: object
    tokenizer: object
    device: str
    compute: dict  # {"method", "bf16"}
    train_set: list[Example]
    eval_set: list[Example]
    optimizer: object
    scheduler: object
    total_steps: int
    position: dict
    history: dict
    best_state: dict | None = None  # the adapter weights at the best held-out loss so far


def setup(config: TrainConfig, data_path, eval_path, checkpoint_dir: Path, log: Callable[[str], None]) -> Run:
    """Load the model and data, build the optimiser and schedule, and resume from a checkpoint if any."""
    import torch
    from transformers import get_scheduler

    random.seed(config.seed)
    torch.manual_seed(config.seed)
    device = device_name()
    model, tokenizer, compute = load_model(config)
    precision = "bf16" if compute["bf16"] else "fp32"
    log(f"Loaded {Path(config.base_model_path).name} for {compute['method'].upper()} on {device} ({precision})")
    train_set, eval_set = datasets(tokenizer, config, data_path, eval_path)
    steps_per_epoch = max(1, math.ceil(len(train_set) / config.batch_size) // config.gradient_accumulation)
    total_steps = config.max_steps or max(1, math.ceil(steps_per_epoch * config.epochs))
    trainable = [p for p in model.parameters() if p.requires_grad]
    log(f"{len(train_set)} training and {len(eval_set)} held-out examples; {total_steps} steps; "
        f"{sum(p.numel() for p in trainable):,} trainable parameters")  # fmt: skip
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = get_scheduler(
        config.lr_scheduler if config.lr_scheduler != "constant" else "constant_with_warmup",
        optimizer,
        num_warmup_steps=int(total_steps * config.warmup_ratio),
        num_training_steps=total_steps,
    )
    run = Run(config, model, tokenizer, device, compute, train_set, eval_set, optimizer, scheduler, total_steps,
              {"step": 0, "epoch": 0, "batch": 0, "tokens": 0}, {"train": [], "eval": [], "best": None})  # fmt: skip
    if (checkpoint_dir / "state.pt").exists():
        run.position, run.history, run.best_state = load_checkpoint(model, optimizer, scheduler, checkpoint_dir)
        run.history.setdefault("best", None)
        log(f"Resumed from the checkpoint at step {run.position['step']} of {total_steps}")
    return run


def adapter_state(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def restore_adapter(model, state: dict) -> None:
    import torch

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name in state:
                parameter.copy_(state[name])


def held_out_check(run: Run, report: ProgressFn) -> bool:
    """Measure the held-out loss, keep the adapter if it is the best so far; True when the run should stop
    early (no better loss for ``early_stopping_patience`` checks)."""
    config, history = run.config, run.history
    loss = evaluate_loss(run.model, run.eval_set, config.batch_size * 2, run.device, run.compute["bf16"])
    step = run.position["step"]
    history["eval"].append({"step": step, "loss": round(loss, 5)})
    report({"event": "eval", "step": step, "loss": loss})
    best = history["best"]
    if best is None or loss < best["loss"]:
        history["best"] = {"step": step, "loss": round(loss, 5)}
        run.best_state = adapter_state(run.model)
        return False
    checks_since = sum(1 for point in history["eval"] if point["step"] > best["step"])
    return bool(config.early_stopping_patience) and checks_since >= config.early_stopping_patience


def train_steps(run: Run, checkpoint_dir: Path, report: ProgressFn, stop: Callable[[], bool]) -> None:
    """Optimiser steps until the step budget is spent or the held-out loss stops improving."""
    import torch

    config, position, model = run.config, run.position, run.model
    parameters = [p for p in model.parameters() if p.requires_grad]
    lengths = [len(e.input_ids) for e in run.train_set]
    model.train()
    started = saved_at = time.monotonic()
    every = max(1, min(config.checkpoint_every, run.total_steps // 4))
    tokens_at_start, step_at_start = position["tokens"], position["step"]
    while position["step"] < run.total_steps:
        batches = epoch_batches(lengths, config.batch_size, config.seed, position["epoch"])
        while position["batch"] < len(batches) and position["step"] < run.total_steps:
            if stop():
                raise Cancelled
            group = batches[position["batch"] : position["batch"] + config.gradient_accumulation]
            chunks = [[run.train_set[i] for i in batch] for batch in group]
            denominator = max(sum(packing.target_count(chunk) for chunk in chunks), 1)
            step_loss = 0.0
            for chunk in chunks:
                # Every response token weighs the same, whatever batch of the step it fell in.
                with autocast(run.device, run.compute["bf16"]):
                    loss = packing.summed_loss(model, packing.pack(chunk), run.device) / denominator
                loss.backward()
                step_loss += loss.item()
            torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
            run.optimizer.step()
            run.scheduler.step()
            run.optimizer.zero_grad(set_to_none=True)
            position["batch"] += len(group)
            position["step"] += 1
            position["tokens"] += sum(len(e.input_ids) for chunk in chunks for e in chunk)
            elapsed = time.monotonic() - started
            done = position["step"] - step_at_start
            point = {
                "step": position["step"],
                "loss": round(step_loss, 5),
                "lr": run.scheduler.get_last_lr()[0],
                "tokens_per_s": round((position["tokens"] - tokens_at_start) / elapsed, 1) if elapsed else 0.0,
            }
            run.history["train"].append(point)
            remaining = round(elapsed / done * (run.total_steps - position["step"]), 1)
            report({"event": "step", **point, "total_steps": run.total_steps, "epoch": position["epoch"],
                    "elapsed_s": round(elapsed, 1), "remaining_s": remaining})  # fmt: skip
            epoch_end = position["batch"] >= len(batches)
            due = position["step"] % config.eval_every == 0 if config.eval_every else epoch_end
            if run.eval_set and due and held_out_check(run, report):
                best = run.history["best"]
                report({"event": "log", "message": f"Held-out loss has not improved on step {best['step']}'s "
                        f"{best['loss']:.3f} for {config.early_stopping_patience} checks: stopping early"})  # fmt: skip
                return
            due = position["step"] % every == 0 or time.monotonic() - saved_at >= config.checkpoint_every_s
            if due and position["step"] < run.total_steps:
                save_checkpoint(run, checkpoint_dir)
                saved_at = time.monotonic()
                report({"event": "checkpoint", "step": position["step"]})
        if position["batch"] >= len(batches):
            position["epoch"] += 1
            position["batch"] = 0


def task_evaluation(run: Run, probes: dict[str, list[dict]], stop: Callable[[], bool]) -> dict:
    """Greedy answers of the base model and the fine-tune, scored: on a sample of the held-out records,
    a fixed sample of the trained records (recall), and any named probe sets."""
    config = run.config
    sets = {
        "held_out": questions_from(run.tokenizer, run.eval_set, config.task_eval_examples, config.seed),
        "trained": questions_from(run.tokenizer, run.train_set, config.task_eval_examples, config.seed),
        **probes,
    }
    out = {}
    for name, questions in sets.items():
        if not questions or not config.task_eval_examples:
            continue
        if stop():
            raise Cancelled
        longest = max(len(run.tokenizer(q["reference"])["input_ids"]) for q in questions)
        new_tokens = min(config.max_new_tokens, longest + 8)
        with autocast(run.device, run.compute["bf16"]):
            tuned = taskeval.answer_and_score(run.model, run.tokenizer, questions, new_tokens, run.device)
            with run.model.disable_adapter():
                base = taskeval.answer_and_score(run.model, run.tokenizer, questions, new_tokens, run.device)
        examples = [
            {"question": t["question"], "reference": t["reference"], "base": b["answer"], "tuned": t["answer"],
             "base_correct": b["contains"], "tuned_correct": t["contains"], "base_f1": b["f1"], "tuned_f1": t["f1"]}
            for t, b in zip(tuned, base, strict=False)
        ]  # fmt: skip
        out[name] = {"base": taskeval.summarise(base), "tuned": taskeval.summarise(tuned), "examples": examples}
    return out


def probe_questions(tokenizer, paths: dict[str, Path | str] | None, config: TrainConfig) -> dict[str, list[dict]]:
    """Named extra question sets (JSONL records, like the training data) to score base and fine-tune on."""
    out = {}
    for name, path in (paths or {}).items():
        examples = load_examples(tokenizer, path, config.max_seq_length)
        out[name] = questions_from(tokenizer, examples, len(examples), config.seed)
    return out


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
    ``probes``: named question files (JSONL records) whose answers are scored too."""
    started = time.monotonic()
    config.validate()
    if config.objective != "sft":
        from training import preference_run

        return preference_run.train(config, data_path, output_dir, progress, should_stop, eval_path, probes)
    report = progress or (lambda event: None)
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
    train_steps(run, checkpoint_dir, report, stop)
    train_seconds = time.monotonic() - train_seconds
    best = run.history["best"] if config.early_stopping_patience else None
    if best and run.best_state is not None and best["step"] != run.position["step"]:
        restore_adapter(run.model, run.best_state)
        log(f"Keeping the adapter of step {best['step']}, whose held-out loss {best['loss']:.3f} was the best")

    report({"event": "evaluating"})
    log("Evaluating the base model and the fine-tune: held-out loss and answers to questions")
    metrics = evaluate(run, probe_questions(run.tokenizer, probes, config), stop)
    attribution = None
    if config.influence_methods:
        log(f"Measuring each record's influence on the held-out loss ({', '.join(config.influence_methods)})")
        attribution = attribute(run, output_dir, report)
        if stop():
            raise Cancelled
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
    log(_summary_line(metrics))
    return metrics


def evaluate(run: Run, probes: dict[str, list[dict]], stop: Callable[[], bool]) -> dict:
    """Held-out loss and perplexity (or the trained sample's, with no held-out split) and the task scores."""
    losses = run.eval_set or run.train_set[: max(run.config.task_eval_examples, 40)]
    bf16, size = run.compute["bf16"], run.config.batch_size * 2
    tuned_loss = evaluate_loss(run.model, losses, size, run.device, bf16)
    with run.model.disable_adapter():
        base_loss = evaluate_loss(run.model, losses, size, run.device, bf16)
    task = task_evaluation(run, probes, stop)
    samples = []
    for name in ("held_out", "trained"):
        samples += [{"set": name, "prompt": e["question"], **e} for e in task.get(name, {}).get("examples", [])[
            : run.config.eval_prompts]]  # fmt: skip
    return {
        "method": run.compute["method"],
        "precision": "bf16" if run.compute["bf16"] else "fp32",
        "train_examples": len(run.train_set),
        "eval_examples": len(run.eval_set),
        "loss_on": "held_out" if run.eval_set else "trained",
        "held_out": sorted({e.source["content_hash"] for e in run.eval_set if e.source.get("content_hash")}),
        "trainable_parameters": sum(p.numel() for p in run.model.parameters() if p.requires_grad),
        "tokens": run.position["tokens"],
        "base": {"eval_loss": base_loss, "perplexity": math.exp(min(base_loss, 50))},
        "tuned": {"eval_loss": tuned_loss, "perplexity": math.exp(min(tuned_loss, 50))},
        "task": task,
        "samples": samples,
        "history": run.history,
        "device": run.device,
    }


def _summary_line(metrics: dict) -> str:
    line = f"Done: held-out loss {metrics['base']['eval_loss']:.3f} (base) -> {metrics['tuned']['eval_loss']:.3f}"
    for name, result in metrics["task"].items():
        base, tuned = result["base"], result["tuned"]
        line += f"; {name} questions answered {base['accuracy']:.0%} (base) -> {tuned['accuracy']:.0%}"
    return line


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Fine-tune a LoRA/QLoRA adapter from a config file.")
    parser.add_argument("config", help="JSON file: TrainConfig fields plus data_path and output_dir")
    args = parser.parse_args(argv)
    raw = json.loads(Path(args.config).read_text())
    data_path, output_dir = raw.pop("data_path"), raw.pop("output_dir")

    def show(event: dict) -> None:
        if event["event"] == "step":
            print(f"step {event['step']}/{event['total_steps']} loss {event['loss']:.4f} "
                  f"lr {event['lr']:.2e} {event['tokens_per_s']:.0f} tok/s", flush=True)  # fmt: skip
        elif event["event"] == "log":
            print(event["message"], flush=True)

    metrics = train(TrainConfig.from_dict(raw), data_path, output_dir, progress=show)
    print(json.dumps({k: metrics[k] for k in ("steps", "base", "tuned")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
