"""Task evaluation: does the model answer what the data teaches? No Django.

The base model and the fine-tune answer questions greedily; each answer is scored against the
reference answer: exact match after normalising case, punctuation and whitespace; "contains" (the
normalised reference appears in the normalised answer: the accuracy shown to people); token F1.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter

_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}\u2018\u2019\u201c\u201d\u2013\u2014]")


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_PUNCTUATION.sub(" ", text).split())


def token_f1(answer: str, reference: str) -> float:
    got, want = normalise(answer).split(), normalise(reference).split()
    if not got or not want:
        return float(got == want)
    common = sum((Counter(got) & Counter(want)).values())
    if not common:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


def score(answer: str, reference: str) -> dict:
    a, r = normalise(answer), normalise(reference)
    return {"exact": a == r, "contains": bool(r) and r in a, "f1": round(token_f1(answer, reference), 4)}


def summarise(scored: list[dict]) -> dict:
    n = len(scored)
    if not n:
        return {"n": 0, "accuracy": None, "exact": None, "f1": None}
    return {
        "n": n,
        "accuracy": round(sum(s["contains"] for s in scored) / n, 4),
        "exact": round(sum(s["exact"] for s in scored) / n, 4),
        "f1": round(sum(s["f1"] for s in scored) / n, 4),
    }


def generate(
    model, tokenizer, prompts: list[list[int]], max_new_tokens: int, device: str, batch_size: int = 16
) -> list[str]:
    """Greedy answers to tokenised prompts, a batch at a time, left-padded so every row decodes from its end."""
    import torch

    pad = tokenizer.pad_token_id
    stops = [t for t in {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")} if isinstance(t, int)]
    answers = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            width = max(len(p) for p in chunk)
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device)
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=stops or None,
                use_cache=True,
            )
            answers += [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]
    model.train(was_training)
    return answers


def answer_and_score(model, tokenizer, questions: list[dict], max_new_tokens: int, device: str) -> list[dict]:
    """``questions``: {prompt_ids, question, reference}; returns each with the answer and its scores."""
    answers = generate(model, tokenizer, [q["prompt_ids"] for q in questions], max_new_tokens, device)
    return [
        {"question": q["question"], "reference": q["reference"], "answer": a, **score(a, q["reference"])}
        for q, a in zip(questions, answers, strict=False)
    ]
