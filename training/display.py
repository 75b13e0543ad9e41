"""How the wizard and the job pages name methods, presets, settings and a run's phases for people."""

from .presets import PRESETS

METHODS = {
    "auto": "Automatic (LoRA or QLoRA, whichever is faster on the worker)",
    "qlora": "QLoRA",
    "lora": "LoRA",
    "dora": "DoRA",
    "full": "Full fine-tuning",
}

SETTINGS = {
    "method": "Method",
    "objective": "Objective",
    "beta": "Beta (DPO, ORPO)",
    "lora_r": "LoRA rank",
    "lora_alpha": "LoRA alpha",
    "lora_dropout": "LoRA dropout",
    "target_modules": "Target modules",
    "learning_rate": "Learning rate",
    "loraplus_lr_ratio": "LoRA+ ratio",
    "lr_scheduler": "Learning-rate schedule",
    "warmup_ratio": "Warm-up share",
    "epochs": "Epochs",
    "batch_size": "Batch size",
    "gradient_accumulation": "Gradient accumulation steps",
    "max_seq_length": "Max sequence length (tokens)",
    "eval_fraction": "Held-out split",
    "early_stopping_patience": "Early stopping (held-out checks without a better loss)",
    "task_eval_examples": "Questions scored per set",
    "seed": "Seed",
    "devices": "Devices (GPUs, or processes on a CPU worker)",
    "nodes": "Nodes (workers, each with that many devices)",
    "parallel": "Across devices",
    "max_steps": "Step limit",
    "checkpoint_every": "Checkpoint every (steps)",
    "precision": "Precision",
    "influence_methods": "Attribution (influence methods)",
}

PHASES = {
    "preparing": "Preparing the training data",
    "loading": "Loading the model and tokenising the data",
    "training": "Training",
    "evaluating": "Evaluating the base model and the fine-tune",
    "attributing": "Measuring each record's influence",
}


def method_label(method: str) -> str:
    return METHODS.get(method, method)


def preset_name(preset: str) -> str:
    """The preset's short name ("Standard"), from its label."""
    label = PRESETS.get(preset, {}).get("label", preset)
    return label.split(":")[0].replace(" (default)", "").strip()


def _value(key: str, value) -> str:
    if key == "method":
        return method_label(value)
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, float) and value.is_integer() and key == "epochs":
        return str(int(value))
    return str(value)


def settings_rows(config: dict | None, defaults: dict | None = None) -> list[dict]:
    """A run's settings as (label, value) rows: the named ones first, in the wizard's order, then the rest;
    ``defaults`` (the trainer's) fill in the named settings the config leaves out."""
    config = {**{k: v for k, v in (defaults or {}).items() if k in SETTINGS}, **(config or {})}
    keys = [k for k in SETTINGS if k in config] + sorted(k for k in config if k not in SETTINGS)
    return [
        {"key": k, "label": SETTINGS.get(k, k.replace("_", " ").capitalize()), "value": _value(k, config[k])}
        for k in keys
        if config[k] not in (None, "", [], {})
    ]
