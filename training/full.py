"""Full fine-tuning: every weight of a small base model trains. No Django.

``FullModel`` gives a plain causal LM the few peft methods the trainer calls: ``get_base_model``,
``save_pretrained`` (a Hugging Face model directory, loadable with ``AutoModelForCausalLM``) and
``disable_adapter``, which swaps the base model's weights back in for the side-by-side comparisons
from a copy kept on the CPU: affordable only because full fine-tuning is offered for models small
enough (training/estimates.py). DPO, whose reference must be the base without a second copy, is
refused with it.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch


class FullModel(torch.nn.Module):
    def __init__(self, lm):
        super().__init__()
        self.lm = lm
        self.base_weights = {name: value.detach().to("cpu", copy=True) for name, value in lm.state_dict().items()}

    def forward(self, *args, **kwargs):
        return self.lm(*args, **kwargs)

    def get_base_model(self):
        return self.lm

    def generate(self, *args, **kwargs):
        return self.lm.generate(*args, **kwargs)

    def save_pretrained(self, directory) -> None:
        self.lm.save_pretrained(directory, safe_serialization=True)

    @contextmanager
    def disable_adapter(self):
        tuned = {name: value.detach().to("cpu", copy=True) for name, value in self.lm.state_dict().items()}
        self.lm.load_state_dict(self.base_weights)
        try:
            yield
        finally:
            self.lm.load_state_dict(tuned)


def load_trained_weights(model, directory: Path | str) -> None:
    """Put saved trained weights (a checkpoint's or an earlier run's) into ``model``: a FullModel's whole
    model, a peft model's adapter."""
    from safetensors.torch import load_file

    directory = Path(directory)
    if isinstance(model, FullModel):
        model.lm.load_state_dict(load_file(str(directory / "model.safetensors")), strict=False)
        return
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, load_file(str(directory / "adapter_model.safetensors")))
