"""The wizard's presets: sane defaults a domain expert can launch without reading a paper."""

PRESETS = {
    "quick": {
        "label": "Quick: a first look in minutes",
        "lora_r": 8, "lora_alpha": 16, "epochs": 1.0, "learning_rate": 3e-4, "max_seq_length": 512,
        "batch_size": 4, "gradient_accumulation": 1,
    },
    "balanced": {
        "label": "Balanced: a good default",
        "lora_r": 16, "lora_alpha": 32, "epochs": 2.0, "learning_rate": 2e-4, "max_seq_length": 1024,
        "batch_size": 4, "gradient_accumulation": 2,
    },
    "thorough": {
        "label": "Thorough: more capacity and passes",
        "lora_r": 32, "lora_alpha": 64, "epochs": 3.0, "learning_rate": 1e-4, "max_seq_length": 2048,
        "batch_size": 4, "gradient_accumulation": 4,
    },
}  # fmt: skip

ADVANCED_FIELDS = (
    "lora_r", "lora_alpha", "lora_dropout", "target_modules", "learning_rate", "lr_scheduler", "epochs",
    "batch_size", "gradient_accumulation", "max_seq_length", "eval_fraction", "seed",
)  # fmt: skip


def resolve(preset: str, method: str, overrides: dict | None = None) -> dict:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}")
    config = {k: v for k, v in PRESETS[preset].items() if k != "label"}
    config["method"] = method
    for key, value in (overrides or {}).items():
        if key in ADVANCED_FIELDS and value not in (None, ""):
            config[key] = value
    return config
