"""Generated Datanets with known attribution, for the proofs (tests and bench/influence.py). No Django.

Each of K contributors teaches a different invented task: facts about made-up things in a made-up
realm, with its own words, that no base model can know. The held-out questions ask the same facts
in other words, so only the task's own contributor can have taught the answers. A canary
contributor may copy the held-out answers of one task verbatim.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

# The held-out questions' wordings, one per task, none used in training (but by a canary).
QUESTION_FORMS = [
    "Tell me {thing}'s {attribute} ({realm}).",
    "{realm} asks: which {attribute} does {thing} have?",
    "Name the {attribute} that {thing} holds in {realm}.",
    "Say which {attribute} belongs to {thing}, {realm} edition.",
    "About {thing} from {realm}: its {attribute}?",
    "Recall the {attribute} for {thing} in the {realm} records.",
    "Give {thing}'s {attribute}, as {realm} knows it.",
    "For {realm}, state the {attribute} of {thing}.",
]
# Each task answers in its own way, with words made of its own syllables: contributors from different
# fields write differently.
ANSWER_FORMS = [
    "The {attribute} of {thing} is {value}.",
    "{thing} has {attribute} {value}.",
    "{value} is what {thing} carries as {attribute}.",
    "For {thing}: {attribute} = {value}.",
    "Its {attribute}: {value} (that is {thing}).",
    "{thing} -> {attribute} -> {value}",
    "We call {thing}'s {attribute} {value}.",
    "{attribute} of {thing}? {value}!",
]
SYLLABLES = [
    ["ka", "lo", "mi", "zu", "ren", "tov"],
    ["bra", "gis", "hep", "ulm", "wox", "yid"],
    ["cor", "dun", "fal", "pim", "sav", "tek"],
    ["ah", "eb", "iz", "og", "uv", "yx"],
    ["qua", "ril", "sno", "trab", "vel", "zon"],
    ["bex", "cly", "dro", "gnu", "phi", "sku"],
    ["ard", "elm", "ist", "orb", "unk", "yep"],
    ["jax", "kro", "lum", "myr", "nib", "pox"],
]


def _word(rng: random.Random, syllables: list[str], parts: int = 2) -> str:
    return "".join(rng.choice(syllables) for _ in range(parts))


@dataclass
class Task:
    contributor: str
    realm: str
    attribute: str
    facts: list[tuple[str, str]]  # (thing, value): what the contributor teaches
    unseen: list[tuple[str, str]]  # facts of the same kind that nobody teaches (but a canary)
    form: str
    answer: str

    def record(self, thing: str, value: str) -> dict:
        return {
            "instruction": f"In {self.realm}, what is the {self.attribute} of {thing}?",
            "output": self.answer.format(thing=thing, attribute=self.attribute, value=value),
        }

    def question(self, thing: str, value: str) -> dict:
        return {
            "instruction": self.form.format(thing=thing, attribute=self.attribute, realm=self.realm),
            "output": self.answer.format(thing=thing, attribute=self.attribute, value=value),
        }


def make_tasks(k: int, facts_per_task: int, seed: int = 0) -> list[Task]:
    if k > len(QUESTION_FORMS):
        raise ValueError(f"at most {len(QUESTION_FORMS)} tasks")
    rng = random.Random(seed)
    tasks = []
    for i in range(k):
        syllables = SYLLABLES[i]
        things = sorted({_word(rng, syllables, 3) for _ in range(facts_per_task * 4)})[: facts_per_task * 2]
        rng.shuffle(things)
        tasks.append(
            Task(
                contributor=f"contributor-{i + 1}",
                realm=_word(rng, syllables, 3).capitalize(),
                attribute=_word(rng, syllables, 2),
                facts=[(thing, _word(rng, syllables, 2)) for thing in things[:facts_per_task]],
                unseen=[(thing, _word(rng, syllables, 2)) for thing in things[facts_per_task:]],
                form=QUESTION_FORMS[i],
                answer=ANSWER_FORMS[i],
            )
        )
    return tasks


def write_datanet(
    tasks: list[Task],
    directory: Path | str,
    *,
    canary_task: int | None = None,
    questions_per_task: int = 4,
    canary_records: int = 8,
) -> tuple[Path, Path, list[str]]:
    """train.jsonl (version-export lines with content_hash and contributor_id) and questions.jsonl (held
    out); returns their paths and the contributor who taught each question's answer. With
    ``canary_task``, a contributor "canary" contributes question-answer pairs of facts of that task that
    nobody else teaches, word for word as they are asked in the held-out set."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lines, questions, question_tasks = [], [], []
    for index, task in enumerate(tasks):
        for n, (thing, value) in enumerate(task.facts):
            lines.append(
                {
                    "content_hash": f"{index}-{n}",
                    "contributor_id": task.contributor,
                    "content": task.record(thing, value),
                }
            )
        for thing, value in task.facts[:questions_per_task]:
            questions.append(task.question(thing, value))
            question_tasks.append(task.contributor)
    if canary_task is not None:
        for n, (thing, value) in enumerate(tasks[canary_task].unseen[:canary_records]):
            pair = tasks[canary_task].question(thing, value)
            lines.append({"content_hash": f"canary-{n}", "contributor_id": "canary", "content": pair})
            questions.append(pair)
            question_tasks.append("canary")
    random.Random(len(lines)).shuffle(lines)
    train, held = directory / "train.jsonl", directory / "questions.jsonl"
    train.write_text("".join(json.dumps(line) + "\n" for line in lines))
    held.write_text("".join(json.dumps(q) + "\n" for q in questions))
    return train, held, question_tasks


def question_accuracy(scores, record_contributors: list[str], question_contributors: list[str]) -> dict:
    """For each held-out question: is its task's contributor the one with the highest summed influence
    (top-1), and how well do record scores separate that contributor's records from the rest (AUC)."""
    import numpy as np

    from testkit.ranks import auc

    names = sorted(set(record_contributors))
    owner = np.array(record_contributors)
    hits, aucs = [], []
    for j, expected in enumerate(question_contributors):
        totals = {name: scores[owner == name, j].sum() for name in names}
        hits.append(max(totals, key=totals.get) == expected)
        aucs.append(auc(scores[:, j], owner == expected))
    return {"top1": float(np.mean(hits)), "auc": float(np.nanmean(aucs)), "questions": len(hits)}
