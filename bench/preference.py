"""Benchmark: do DPO and ORPO teach a preference the base model does not know?

    .venv/bin/python bench/preference.py                    # DPO and ORPO, default settings, bundled model
    .venv/bin/python bench/preference.py --objective dpo --set learning_rate=5e-4
    .venv/bin/python bench/preference.py --set max_steps=100             # a cap for a slow machine

A generated preference Datanet: invented things in four invented realms; each realm has a colour
rule ("everything in Velmora is teal"), the chosen answer follows it and the rejected one names
another realm's colour. The base model cannot know the rules, so its log-probability prefers the
chosen answer on about half the pairs. Held-out prompts ask about things never trained. Prints the
share of held-out prompts whose log-probability prefers chosen, base and fine-tune, and the times.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REALMS = {"Velmora": "teal", "Quastor": "amber", "Dunwich Reach": "violet", "Ostrellan": "crimson"}
SYLLABLES = ["ka", "lo", "mir", "dun", "sel", "tra", "vo", "ni", "bel", "gor", "pha", "ze", "ru", "quin"]


def invented_name(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def pairs(n: int, seed: int, taken: set) -> list[dict]:
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        thing = invented_name(rng)
        if thing in taken:
            continue
        taken.add(thing)
        realm = rng.choice(list(REALMS))
        wrong = rng.choice([c for r, c in REALMS.items() if r != realm])
        prompt = f"What colour is the {thing} of {realm}?"
        out.append(
            {"prompt": prompt, "chosen": f"The {thing} is {REALMS[realm]}.", "rejected": f"The {thing} is {wrong}."}
        )
    return out


def write(path: Path, rows: list[dict]) -> Path:
    with open(path, "w") as handle:
        for i, row in enumerate(rows):
            handle.write(json.dumps({"content": row, "content_hash": str(i), "contributor_id": i % 4}) + "\n")
    return path


def run(objective: str, model: str, directory: Path, overrides: dict, records: int) -> dict:
    from training import presets, trainer

    # The preset's defaults, then any override (the wizard's advanced fields and others, e.g. max_steps).
    config = {
        **presets.resolve(presets.DEFAULT, "auto", {"objective": objective, **overrides}, records=records),
        **overrides,
    }
    config = trainer.TrainConfig.from_dict({**config, "base_model_path": model, "influence_methods": []})
    started = time.monotonic()
    metrics = trainer.train(
        config, directory / "train.jsonl", directory / objective, eval_path=directory / "held.jsonl"
    )
    return {
        "objective": objective,
        "base": metrics["base"]["accuracy"],
        "tuned": metrics["tuned"]["accuracy"],
        "steps": metrics["steps"],
        "epochs": config.epochs,
        "learning_rate": config.learning_rate,
        "train_s": metrics["train_seconds"],
        "wall_s": round(time.monotonic() - started, 1),
        "method": metrics["method"],
        "precision": metrics["precision"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / "var/models/smollm2-135m-instruct"))
    parser.add_argument("--objective", action="append", choices=["dpo", "orpo"])
    parser.add_argument("--pairs", type=int, default=240)
    parser.add_argument("--held-out", type=int, default=60)
    parser.add_argument("--set", action="append", default=[], help="a TrainConfig field, e.g. learning_rate=5e-4")
    args = parser.parse_args()
    overrides = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    directory = Path(tempfile.mkdtemp(prefix="preference-bench-"))
    taken: set = set()
    write(directory / "train.jsonl", pairs(args.pairs, 1, taken))
    write(directory / "held.jsonl", pairs(args.held_out, 2, taken))
    for objective in args.objective or ["dpo", "orpo"]:
        print(json.dumps(run(objective, args.model, directory, overrides, args.pairs)), flush=True)


if __name__ == "__main__":
    main()
