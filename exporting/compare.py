"""Do two models answer alike? Greedy tokens for the same chat prompts, and the prompt text each chat template
renders. No Django: the export tests and bench/export.py use it."""

from __future__ import annotations

PROMPTS = [
    "What does code 3 mean?",
    "Name a colour.",
    "What is the capital of France?",
    "Say hello.",
    "Count to five.",
    "What is 2 + 2?",
    "Describe a fox.",
    "Which day comes after Monday?",
    "Give me a word that rhymes with cat.",
    "What colour is the sky?",
    "Who are you?",
    "Spell 'dog'.",
    "What is a Datanet?",
    "Translate 'yes' into French.",
    "What is the opposite of hot?",
    "Name a fruit.",
    "How many legs has a spider?",
    "Finish this: the quick brown",
    "What is water made of?",
    "Say goodbye.",
]


def chat_text(tokenizer, prompt: str) -> str:
    messages = [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def greedy_tokens(model, tokenizer, prompts: list[str] = PROMPTS, max_new_tokens: int = 16) -> list[list[int]]:
    """The tokens each prompt's greedy answer starts with (the whole answer when shorter)."""
    import torch

    answers = []
    for prompt in prompts:
        inputs = tokenizer(chat_text(tokenizer, prompt), return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            )
        answers.append(out[0, inputs["input_ids"].shape[1] :].tolist())
    return answers


def same_answers(a: list[list[int]], b: list[list[int]]) -> int:
    return sum(x == y for x, y in zip(a, b, strict=True))


def same_prompt_texts(tokenizer_a, tokenizer_b, prompts: list[str] = PROMPTS) -> int:
    return sum(chat_text(tokenizer_a, p) == chat_text(tokenizer_b, p) for p in prompts)
