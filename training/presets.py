"""The wizard's presets: settings a domain expert can launch without reading a paper.

Measured with `bench/learning.py` (README, "Learning"): a small model holds new facts only after
many passes (9 passes held 0.750 of the trained facts, 10 held 0.925), and for the same passes, steps of
one record teach far more than steps of four (0.925 against 0.525); with compiled decoder layers
(training/modeling.py) a step of one record takes about 0.2 s on 2 CPU cores, so ten passes of 240
records fit in ten minutes. A preset sizes its run to the Datanet: enough epochs that the run sees about
``examples`` records in all (never fewer than ``min_epochs``, never more than ``max_epochs``).
Early stopping on the held-out loss is a choice, off by default: that loss rises while recall of the
trained facts still climbs.
"""

import math

PRESETS = {
    "quick": {
        "label": "Quick: about 3 passes; learns the Datanet's style and format, holds few of its facts",
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "learning_rate": 2e-3,
        "batch_size": 4,
        "gradient_accumulation": 1,
        "max_seq_length": 512,
        "examples": 720,
        "min_epochs": 1,
        "max_epochs": 3,
    },
    "standard": {
        "label": "Standard (default): about 10 passes in steps of one record, to hold the Datanet's facts",
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.0,
        "learning_rate": 1e-3,
        "batch_size": 1,
        "gradient_accumulation": 1,
        "max_seq_length": 1024,
        "examples": 2400,
        "min_epochs": 6,
        "max_epochs": 24,
    },
    "thorough": {
        "label": "Thorough: about 15 passes in steps of one record, for the most recall; takes half as long again",
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.0,
        "learning_rate": 1e-3,
        "batch_size": 1,
        "gradient_accumulation": 1,
        "max_seq_length": 2048,
        "examples": 3600,
        "min_epochs": 9,
        "max_epochs": 36,
    },
}
DEFAULT = "standard"
SIZING = ("label", "examples", "min_epochs", "max_epochs")

# DPO and ORPO move an answer's probability relative to another's rather than teach new text: a quarter of
# the examples (at least one pass) in batches of 4 at the learning rate measured with bench/preference.py
# (README): 1e-3 for standard (and thorough), two thirds of that for quick.
PREFERENCE = {"examples": 0.25, "batch_size": 4, "learning_rate": {"quick": 6.7e-4, "standard": 1e-3, "thorough": 1e-3}}

ADVANCED_FIELDS = (
    "objective",
    "beta",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "learning_rate",
    "loraplus_lr_ratio",
    "lr_scheduler",
    "epochs",
    "batch_size",
    "gradient_accumulation",
    "max_seq_length",
    "eval_fraction",
    "early_stopping_patience",
    "seed",
    "devices",
    "nodes",
    "parallel",
    "influence_methods",
)


def epochs_for(preset: str, records: int, objective: str = "sft") -> float:
    """Passes over a Datanet of ``records`` records that make about the preset's number of examples."""
    values = PRESETS[preset]
    if objective != "sft":
        wanted = values["examples"] * PREFERENCE["examples"] / max(records, 1)
        return float(min(values["max_epochs"], max(1, math.ceil(wanted))))
    wanted = values["examples"] / max(records, 1)
    return float(min(values["max_epochs"], max(values["min_epochs"], math.ceil(wanted))))


def learning_rate(preset: str, objective: str = "sft") -> float:
    """The preset's learning rate for the objective (preference objectives have their own, PREFERENCE)."""
    return PRESETS[preset]["learning_rate"] if objective == "sft" else PREFERENCE["learning_rate"][preset]


def resolve(preset: str, method: str, overrides: dict | None = None, *, records: int = 0) -> dict:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}")
    config = {k: v for k, v in PRESETS[preset].items() if k not in SIZING}
    objective = (overrides or {}).get("objective") or "sft"
    config["epochs"] = epochs_for(preset, records, objective) if records else float(PRESETS[preset]["min_epochs"])
    config["learning_rate"] = learning_rate(preset, objective)
    if objective != "sft":
        config["batch_size"] = PREFERENCE["batch_size"]
    config["method"] = method
    for key, value in (overrides or {}).items():
        if key in ADVANCED_FIELDS and value not in (None, ""):
            config[key] = value
    if "batch_size" not in (overrides or {}):  # each device takes a share of every batch
        config["batch_size"] = max(config["batch_size"], config.get("devices", 1) * config.get("nodes", 1))
    return config
