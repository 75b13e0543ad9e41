"""Evaluation of a training run: the held-out loss (during training, to keep the best adapter and stop
early, and at the end for the base model and the fine-tune) and the scored answers to questions. No Django."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from pathlib import Path

from training import packing, taskeval
from training.checkpoints import adapter_state
from training.config import Cancelled, ProgressFn, Run, TrainConfig
from training.examples import Example, load_examples, template_ids
from training.modeling import autocast


def pass_size(config: TrainConfig) -> int:
    """Records a pass without an optimiser step (held-out loss, attribution's gradients): what they give does
    not depend on it, and a pass of one short record costs mostly a step's fixed cost, so never fewer than 8."""
    return max(8, config.batch_size * 2)


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
        {
            "prompt_ids": template_ids(tokenizer, prompted[i].prompt, generation_prompt=True),
            "question": prompted[i].prompt[-1]["content"],
            "reference": prompted[i].reference,
        }
        for i in chosen
    ]


def held_out_check(run: Run, report: ProgressFn) -> bool:
    """Measure the held-out loss, keep the adapter if it is the best so far; True when the run should stop
    early (no better loss for ``early_stopping_patience`` checks)."""
    config, history = run.config, run.history
    loss = evaluate_loss(run.model, run.eval_set, pass_size(config), run.device, run.compute["bf16"])
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
        started = time.monotonic()
        longest = max(len(run.tokenizer(q["reference"])["input_ids"]) for q in questions)
        new_tokens = min(config.max_new_tokens, longest + 8)
        with autocast(run.device, run.compute["bf16"]):
            tuned = taskeval.answer_and_score(run.model, run.tokenizer, questions, new_tokens, run.device)
        # A region of its own: autocast keeps its bf16 casts of trainable weights until the region ends, so
        # full fine-tuning's base weights, swapped back in place, would otherwise answer with the tuned ones.
        with run.model.disable_adapter(), autocast(run.device, run.compute["bf16"]):
            base = taskeval.answer_and_score(run.model, run.tokenizer, questions, new_tokens, run.device)
        examples = [
            {
                "question": t["question"],
                "reference": t["reference"],
                "base": b["answer"],
                "tuned": t["answer"],
                "base_correct": b["contains"],
                "tuned_correct": t["contains"],
                "base_f1": b["f1"],
                "tuned_f1": t["f1"],
            }
            for t, b in zip(tuned, base, strict=False)
        ]
        out[name] = {
            "base": taskeval.summarise(base),
            "tuned": taskeval.summarise(tuned),
            "examples": examples,
            "seconds": round(time.monotonic() - started, 1),
        }
    return out


def probe_questions(tokenizer, paths: dict[str, Path | str] | None, config: TrainConfig) -> dict[str, list[dict]]:
    """Named extra question sets (JSONL records, like the training data) to score base and fine-tune on."""
    out = {}
    for name, path in (paths or {}).items():
        examples = load_examples(tokenizer, path, config.max_seq_length)
        out[name] = questions_from(tokenizer, examples, len(examples), config.seed)
    return out


def evaluate(run: Run, probes: dict[str, list[dict]], stop: Callable[[], bool]) -> dict:
    """Held-out loss and perplexity (or the trained sample's, with no held-out split) and the task scores."""
    losses = run.eval_set or run.train_set[: max(run.config.task_eval_examples, 40)]
    bf16, size = run.compute["bf16"], pass_size(run.config)
    tuned_loss = evaluate_loss(run.model, losses, size, run.device, bf16)
    with run.model.disable_adapter():
        base_loss = evaluate_loss(run.model, losses, size, run.device, bf16)
    task = task_evaluation(run, probes, stop)
    samples = []
    for name in ("held_out", "trained"):
        samples += [
            {"set": name, "prompt": e["question"], **e}
            for e in task.get(name, {}).get("examples", [])[: run.config.eval_prompts]
        ]
    return {
        **run_summary(run),
        "base": {"eval_loss": base_loss, "perplexity": math.exp(min(base_loss, 50))},
        "tuned": {"eval_loss": tuned_loss, "perplexity": math.exp(min(tuned_loss, 50))},
        "task": task,
        "samples": samples,
    }


def run_summary(run: Run) -> dict:
    """What every run's metrics say of it, supervised or preference: how it computed, on what, its history."""
    return {
        "method": run.compute["method"],
        "precision": "bf16" if run.compute["bf16"] else "fp32",
        "compiled": run.compute.get("compiled", False),
        "train_examples": len(run.train_set),
        "eval_examples": len(run.eval_set),
        "loss_on": "held_out" if run.eval_set else "trained",
        "held_out": sorted({e.source["content_hash"] for e in run.eval_set if e.source.get("content_hash")}),
        "trainable_parameters": sum(p.numel() for p in run.model.parameters() if p.requires_grad),
        "tokens": run.position["tokens"],
        "history": run.history,
        "device": run.device,
    }


def summary_line(metrics: dict) -> str:
    line = f"Done: held-out loss {metrics['base']['eval_loss']:.3f} (base) -> {metrics['tuned']['eval_loss']:.3f}"
    for name, result in metrics["task"].items():
        base, tuned = result["base"], result["tuned"]
        line += f"; {name} questions answered {base['accuracy']:.0%} (base) -> {tuned['accuracy']:.0%}"
    return line
