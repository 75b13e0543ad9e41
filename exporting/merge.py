"""Merge a LoRA adapter into its base model and save a plain Hugging Face directory. No Django.

The base is loaded in full precision (float32) whatever the adapter trained on: merging into a 4-bit
(QLoRA) base would bake its quantisation error into every merged weight. The merged weights are saved
in the dtype the base was stored in, beside the base's tokenizer, chat template and a generation config
that stops at the end-of-turn token.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def stored_dtype(base_dir: Path) -> str:
    config = json.loads((Path(base_dir) / "config.json").read_text(encoding="utf-8"))
    return config.get("dtype") or config.get("torch_dtype") or "float32"


def load_merged(base_dir: Path | str, adapter_dir: Path | str):
    """The base with the adapter merged in (a plain transformers model, float32), and the tokenizer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(
        base_dir, dtype=torch.float32, use_safetensors=True, trust_remote_code=False
    )
    if getattr(base, "hf_quantizer", None) is not None:
        raise ValueError("The base model loaded quantised; merging needs its full-precision weights.")
    model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=False).merge_and_unload()
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(base_dir, trust_remote_code=False)
    return model, tokenizer


def generation_config_for(model, tokenizer):
    """Greedy by default, stopping at the end-of-turn token (and the model's own end token)."""
    from transformers import GenerationConfig

    stops = [tokenizer.eos_token_id, *_as_list(model.generation_config.eos_token_id)]
    stops = [token for token in dict.fromkeys(stops) if token is not None]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    return GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=stops if len(stops) > 1 else stops[0],
        pad_token_id=pad,
        do_sample=False,
    )


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def merge_adapter(base_dir: Path | str, adapter_dir: Path | str, dest: Path | str) -> Path:
    """Write the merged model to ``dest``: safetensors weights, config, tokenizer (with its chat template)
    and generation config, loadable with ``AutoModelForCausalLM.from_pretrained(dest)``."""
    import torch

    dest = Path(dest)
    model, tokenizer = load_merged(base_dir, adapter_dir)
    if not tokenizer.chat_template:
        raise ValueError("The base model has no chat template to export with the merged weights.")
    model.to(getattr(torch, stored_dtype(Path(base_dir))))
    model.generation_config = generation_config_for(model, tokenizer)
    model.config.use_cache = True
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    return dest
