"""Training examples: records as token ids and labels through the base model's chat template. No Django.

Input data is JSONL with one record a line, each ``{"content": {...}}`` (a Datanet version export)
or the bare content: instruction records ({instruction, input, output}), chat records ({messages})
or text records ({text}). Only response tokens (the assistant turns) are labelled, except for text
records, which are plain language modelling. Used by the trainer, influence and the span index.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from training.packing import IGNORE

__all__ = [
    "IGNORE",
    "Example",
    "collate",
    "encode",
    "epoch_batches",
    "load_examples",
    "load_rows",
    "split",
    "template_ids",
    "to_messages",
]


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


def split(examples: list, fraction: float, seed: int, at_most: int = 100) -> tuple[list, list]:
    """A seeded held-out split of ``fraction`` of the examples (at least 1, at most ``at_most``); none
    when the fraction is 0."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = min(at_most, max(1, round(len(examples) * fraction))) if fraction > 0 and len(examples) > 1 else 0
    held = {i for i in order[:n_eval]}
    return [e for i, e in enumerate(examples) if i not in held], [examples[i] for i in sorted(held)]


def epoch_batches(
    lengths: list[int], batch_size: int, seed: int, epoch: int, by_length: bool = True
) -> list[list[int]]:
    """Shuffle, then sort by length within windows of 50 batches: batches of similar length, in an
    order that still varies from epoch to epoch (``by_length=False``: shuffled only). Deterministic for
    (seed, epoch), so a resumed run sees the same batches. Packed batches have no padding to save, but
    records of a length tend to be records of a kind, and such batches generalised better on
    bench/learning.py (reworded questions 0.55 against 0.025 and 0.3 shuffled, batches of 2)."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i] if by_length else 0)
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
