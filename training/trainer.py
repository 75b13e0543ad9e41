"""The fine-tune trainer: LoRA or QLoRA on a local causal LM, resumable, evaluated. No Django.

    python -m training.trainer CONFIG.json            # runs from the command line too

Input data is JSONL with one record a line, each ``{"content": {...}}`` (a Datanet version export)
or the bare content: instruction records ({instruction, input, output}), chat records ({messages})
or text records ({text}). The base model's chat template is applied; only response tokens (the
assistant turns) count in the loss, except for text records, which are plain language modelling.
Batches are grouped by length so that little compute goes to padding.

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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

IGNORE = -100


class Cancelled(Exception):
    """The caller asked the run to stop."""


@dataclass
class TrainConfig:
    base_model_path: str
    method: str = "qlora"  # "qlora" (4-bit NF4 base, double quantisation) or "lora"
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
    eval_fraction: float = 0.1
    seed: int = 42
    checkpoint_every: int = 20  # steps; and at least 4 times per run, and every checkpoint_every_s seconds
    checkpoint_every_s: float = 300.0
    eval_every: int = 0  # 0: only at the end of the run
    max_steps: int = 0  # 0: as many as the epochs need
    eval_prompts: int = 5
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
        if self.method not in ("qlora", "lora"):
            problems.append("method must be qlora or lora")
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
        if not 0 < self.eval_fraction < 0.5:
            problems.append("evaluation split must be between 0 and 0.5")
        if set(self.influence_methods) - {"datainf", "tracin"}:
            problems.append("influence methods are datainf and tracin")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    prompt: list[dict] | None  # the conversation before the last answer, for side-by-side generation
    reference: str | None
    source: dict = field(default_factory=dict)  # {content_hash, contributor} when the data carries them


# Data ----------------------------------------------------------------------------------------


def load_rows(path: Path | str) -> list[tuple[dict, dict]]:
    """(content, source) per line; source is {content_hash, contributor} of a version export line."""
    out = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            value = json.loads(line)
            content = value.get("content", value) if isinstance(value, dict) else None
            if not isinstance(content, dict):
                raise ValueError(f"{path}:{number}: a record must be a JSON object")
            source = {"content_hash": value.get("content_hash"), "contributor": value.get("contributor_id")}
            out.append((content, source if content is not value else {}))
    if not out:
        raise ValueError(f"{path} holds no records")
    return out


def load_records(path: Path | str) -> list[dict]:
    return [content for content, _ in load_rows(path)]


def load_examples(tokenizer, path: Path | str, max_len: int) -> list[Example]:
    examples = []
    for content, source in load_rows(path):
        example = encode(tokenizer, content, max_len)
        if example:
            example.source = source
            examples.append(example)
    return examples


def to_messages(content: dict) -> list[dict] | None:
    if "messages" in content:
        return content["messages"]
    if "instruction" in content:
        prompt = content["instruction"] + (f"\n\n{content['input']}" if content.get("input") else "")
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": content["output"]}]
    return None  # plain text


def template_ids(tokenizer, messages: list[dict], *, generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


def encode(tokenizer, content: dict, max_len: int) -> Example | None:
    """Token ids and labels; labels are IGNORE outside the assistant turns."""
    messages = to_messages(content)
    if messages is None:
        ids = tokenizer(content["text"], add_special_tokens=False)["input_ids"]
        if tokenizer.eos_token_id is not None:
            ids = ids + [tokenizer.eos_token_id]
        ids = ids[:max_len]
        return Example(ids, list(ids), None, None) if len(ids) > 1 else None
    ids: list[int] = []
    labels: list[int] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = template_ids(tokenizer, messages[:i], generation_prompt=True)
        through = template_ids(tokenizer, messages[: i + 1], generation_prompt=False)
        if through[: len(before)] != before or len(before) < len(ids):
            raise ValueError("the chat template does not extend conversations by appending")
        labels += [IGNORE] * (len(before) - len(ids)) + through[len(before) :]
        ids = through
    ids, labels = ids[:max_len], labels[:max_len]
    if all(label == IGNORE for label in labels):
        return None  # the answer was cut off entirely
    last_answer = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return Example(ids, labels, messages[:last_answer], messages[last_answer]["content"])


def split(examples: list, fraction: float, seed: int) -> tuple[list, list]:
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(examples) * fraction)) if len(examples) > 1 else 0
    held = {i for i in order[:n_eval]}
    return [e for i, e in enumerate(examples) if i not in held], [examples[i] for i in sorted(held)]


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffle, then sort by length within windows of 50 batches: batches of similar length, in an
    order that still varies from epoch to epoch. Deterministic for (seed, epoch), so a resumed run
    sees the same batches."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(examples: list[Example], pad_id: int):
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[row, : len(e.labels)] = torch.tensor(e.labels)
        mask[row, : len(e.input_ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# Model ---------------------------------------------------------------------------------------


def device_name() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(config: TrainConfig):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    device = device_name()
    tokenizer = AutoTokenizer.from_pretrained(config.base_model_path, trust_remote_code=False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    compute_dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    kwargs = {"trust_remote_code": False, "use_safetensors": True, "dtype": compute_dtype}
    if config.method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
        )
        kwargs["device_map"] = {"": 0} if device == "cuda" else {"": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(config.base_model_path, **kwargs)
    if config.method == "lora":
        model.to(device)
    model.config.use_cache = False
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()  # adapters train in fp32 whatever the base dtype
    return model, tokenizer


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


def save_checkpoint(model, optimizer, scheduler, position: dict, history: dict, directory: Path) -> None:
    """Written beside the old one and renamed over it: a kill at any moment leaves one whole checkpoint."""
    import torch

    staging = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging / "adapter")
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_state(),
            "position": position,
            "history": history,
        },
        staging / "state.pt",
    )
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    staging.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(model, optimizer, scheduler, directory: Path) -> tuple[dict, dict]:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(directory / "adapter" / "adapter_model.safetensors"))
    set_peft_model_state_dict(model, weights)
    state = torch.load(directory / "state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return state["position"], state["history"]


def evaluate_loss(model, examples: list[Example], batch_size: int, pad_id: int, device: str) -> float:
    """Mean loss per response token over the held-out examples."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = collate(examples[start : start + batch_size], pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            # num_items_in_batch=1 makes the model's own loss a sum over response tokens.
            loss = model(**batch, num_items_in_batch=torch.tensor(1, device=device)).loss
            total += loss.item()
            count += int((batch["labels"][:, 1:] != IGNORE).sum())
    model.train()
    return total / max(count, 1)


def generate_answer(model, tokenizer, messages: list[dict], max_new_tokens: int, device: str) -> str:
    import torch

    ids = template_ids(tokenizer, messages, generation_prompt=True)
    input_ids = torch.tensor([ids], device=device)
    model.eval()
    with torch.no_grad():
        out = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    model.train()
    return tokenizer.decode(out[0][len(ids) :], skip_special_tokens=True).strip()


def datasets(tokenizer, config: TrainConfig, data_path, eval_path=None) -> tuple[list[Example], list[Example]]:
    """The training set and the held-out set: a seeded split of the data, or the given held-out file."""
    examples = load_examples(tokenizer, data_path, config.max_seq_length)
    if eval_path is not None:
        held_out = load_examples(tokenizer, eval_path, config.max_seq_length)
        if not examples or not held_out:
            raise ValueError("no usable training or held-out records")
        return examples, held_out
    if len(examples) < 2:
        raise ValueError("fewer than 2 usable records: nothing to train and evaluate on")
    return split(examples, config.eval_fraction, config.seed)


def attribute(model, config: TrainConfig, train_set: list[Example], eval_set: list[Example], pad_id: int,
              device: str, output_dir: Path, report: ProgressFn) -> dict:  # fmt: skip
    """Influence of each training record on the held-out loss; writes influence.json (and the per-question
    scores as influence.npz) and returns the summary the job keeps."""
    import numpy as np

    from attribution import influence

    total = len(train_set) + len(eval_set)
    report({"event": "attributing", "done": 0, "total": total})
    result = influence.compute(
        model,
        train_set,
        eval_set,
        [str(e.source.get("contributor", "unknown")) for e in train_set],
        pad_id=pad_id,
        device=device,
        learning_rate=config.learning_rate,
        config=influence.InfluenceConfig(
            methods=tuple(config.influence_methods),
            projection_dim=config.influence_projection_dim,
            batch_size=config.batch_size * 2,
            seed=config.seed,
        ),
        progress=lambda done, total: report({"event": "attributing", "done": done, "total": total}),
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
    model, tokenizer = load_model(config)
    set_peft_model_state_dict(model, load_file(str(Path(adapter_dir) / "adapter_model.safetensors")))
    train_set, eval_set = datasets(tokenizer, config, data_path, eval_path)
    report = progress or (lambda event: None)
    return attribute(model, config, train_set, eval_set, tokenizer.pad_token_id, device_name(), output_dir, report)


def train(
    config: TrainConfig,
    data_path: Path | str,
    output_dir: Path | str,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    eval_path: Path | str | None = None,
) -> dict:
    """Train, evaluate, attribute and save the adapter; return the metrics. Resumes from OUTPUT/checkpoint.
    ``eval_path``: held-out records to evaluate and attribute on, instead of a split of the data."""
    import torch
    from transformers import get_scheduler

    config.validate()
    report = progress or (lambda event: None)
    stop = should_stop or (lambda: False)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = output_dir / "checkpoint"
    device = device_name()

    def log(message: str) -> None:
        report({"event": "log", "message": message})

    random.seed(config.seed)
    torch.manual_seed(config.seed)
    log(f"Loading {Path(config.base_model_path).name} ({config.method.upper()}) on {device}")
    model, tokenizer = load_model(config)
    pad_id = tokenizer.pad_token_id

    train_set, eval_set = datasets(tokenizer, config, data_path, eval_path)
    lengths = [len(e.input_ids) for e in train_set]
    batches_per_epoch = math.ceil(len(train_set) / config.batch_size)
    steps_per_epoch = max(1, batches_per_epoch // config.gradient_accumulation)
    total_steps = config.max_steps or max(1, math.ceil(steps_per_epoch * config.epochs))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"{len(train_set)} training and {len(eval_set)} held-out examples; {total_steps} steps; "
        f"{trainable:,} trainable parameters")  # fmt: skip

    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = get_scheduler(
        config.lr_scheduler if config.lr_scheduler != "constant" else "constant_with_warmup",
        optimizer,
        num_warmup_steps=int(total_steps * config.warmup_ratio),
        num_training_steps=total_steps,
    )
    position = {"step": 0, "epoch": 0, "batch": 0, "tokens": 0}
    history: dict = {"train": [], "eval": []}
    if (checkpoint_dir / "state.pt").exists():
        position, history = load_checkpoint(model, optimizer, scheduler, checkpoint_dir)
        log(f"Resumed from checkpoint at step {position['step']} of {total_steps}")
        report({"event": "resumed", "step": position["step"]})

    model.train()
    started = saved_at = time.monotonic()
    every = max(1, min(config.checkpoint_every, total_steps // 4))
    tokens_at_start, step_at_start = position["tokens"], position["step"]
    while position["step"] < total_steps:
        batches = epoch_batches(lengths, config.batch_size, config.seed, position["epoch"])
        while position["batch"] < len(batches) and position["step"] < total_steps:
            if stop():
                raise Cancelled
            step_loss, step_tokens = 0.0, 0
            group = batches[position["batch"] : position["batch"] + config.gradient_accumulation]
            counts = [sum(1 for label in train_set[i].labels[1:] if label != IGNORE) for b in group for i in b]
            denominator = max(sum(counts), 1)
            for batch_ids in group:
                batch = collate([train_set[i] for i in batch_ids], pad_id)
                batch = {k: v.to(device) for k, v in batch.items()}
                # The model's own loss shifts the labels instead of copying the logits (less memory);
                # num_items_in_batch makes it the sum over response tokens divided by the whole step's
                # count, so every token weighs the same whatever batch it fell in.
                loss = model(**batch, num_items_in_batch=torch.tensor(denominator, device=device)).loss
                loss.backward()
                step_loss += loss.item()
                step_tokens += int(batch["attention_mask"].sum())
            torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            position["batch"] += len(group)
            position["step"] += 1
            position["tokens"] += step_tokens
            elapsed = time.monotonic() - started
            done = position["step"] - step_at_start
            rate = (position["tokens"] - tokens_at_start) / elapsed if elapsed else 0.0
            point = {
                "step": position["step"],
                "loss": round(step_loss, 5),
                "lr": scheduler.get_last_lr()[0],
                "tokens_per_s": round(rate, 1),
            }
            history["train"].append(point)
            report(
                {
                    "event": "step",
                    **point,
                    "total_steps": total_steps,
                    "epoch": position["epoch"],
                    "elapsed_s": round(elapsed, 1),
                    "remaining_s": round(elapsed / done * (total_steps - position["step"]), 1) if done else None,
                }
            )
            if config.eval_every and position["step"] % config.eval_every == 0 and position["step"] < total_steps:
                eval_loss = evaluate_loss(model, eval_set, config.batch_size, pad_id, device)
                history["eval"].append({"step": position["step"], "loss": round(eval_loss, 5)})
                report({"event": "eval", "step": position["step"], "loss": eval_loss})
            due = position["step"] % every == 0 or time.monotonic() - saved_at >= config.checkpoint_every_s
            if due and position["step"] < total_steps:
                save_checkpoint(model, optimizer, scheduler, position, history, checkpoint_dir)
                saved_at = time.monotonic()
                report({"event": "checkpoint", "step": position["step"]})
        if position["batch"] >= len(batches):
            position["epoch"] += 1
            position["batch"] = 0

    report({"event": "evaluating"})
    log("Evaluating the base model and the fine-tune on the held-out split")
    tuned_loss = evaluate_loss(model, eval_set, config.batch_size, pad_id, device)
    with model.disable_adapter():
        base_loss = evaluate_loss(model, eval_set, config.batch_size, pad_id, device)
    history["eval"].append({"step": position["step"], "loss": round(tuned_loss, 5)})
    samples = []
    for example in [e for e in eval_set if e.prompt][: config.eval_prompts]:
        if stop():
            raise Cancelled
        tuned = generate_answer(model, tokenizer, example.prompt, config.max_new_tokens, device)
        with model.disable_adapter():
            base = generate_answer(model, tokenizer, example.prompt, config.max_new_tokens, device)
        samples.append(
            {"prompt": example.prompt[-1]["content"], "reference": example.reference, "base": base, "tuned": tuned}
        )

    attribution = None
    if config.influence_methods:
        log(f"Measuring each record's influence on the held-out loss ({', '.join(config.influence_methods)})")
        attribution = attribute(model, config, train_set, eval_set, pad_id, device, output_dir, report)
        if stop():
            raise Cancelled

    adapter_dir = output_dir / "adapter"
    shutil.rmtree(adapter_dir, ignore_errors=True)
    model.save_pretrained(adapter_dir)
    metrics = {
        "steps": position["step"],
        "train_examples": len(train_set),
        "eval_examples": len(eval_set),
        "held_out": sorted({e.source["content_hash"] for e in eval_set if e.source.get("content_hash")}),
        "trainable_parameters": trainable,
        "tokens": position["tokens"],
        "base": {"eval_loss": base_loss, "perplexity": math.exp(min(base_loss, 50))},
        "tuned": {"eval_loss": tuned_loss, "perplexity": math.exp(min(tuned_loss, 50))},
        "samples": samples,
        "history": history,
        "device": device,
        "influence": attribution,
    }
    (output_dir / "config.json").write_text(json.dumps(asdict(config), indent=2))
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    log(f"Done: held-out loss {base_loss:.3f} (base) -> {tuned_loss:.3f} (fine-tune)")
    return metrics


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
