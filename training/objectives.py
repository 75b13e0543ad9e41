"""Which objectives and methods a fine-tune may use: preference objectives on preference Datanets only,
full fine-tuning only where the estimate says the model fits."""

from __future__ import annotations

from modelfactory.exceptions import ApplicationError

from . import devices, estimates

PREFERENCE_OBJECTIVES = ("dpo", "orpo")


def objective_check(*, objective: str, versions) -> None:
    """DPO and ORPO train on preference records only; supervised fine-tuning on the other schemas only."""
    preference = [v for v in versions if v.datanet.schema == "preference"]
    names = ", ".join(f"{v.datanet.name} v{v.number}" for v in preference)
    if objective in PREFERENCE_OBJECTIVES and len(preference) != len(versions):
        raise ApplicationError(
            f"{objective.upper()} trains on preference Datanets (a prompt, a chosen and a rejected "
            "answer) only: choose only preference Datanet versions, or supervised fine-tuning."
        )
    if objective not in PREFERENCE_OBJECTIVES and preference:
        raise ApplicationError(f"{names} holds preference pairs: choose DPO or ORPO as the objective to train on it.")


def full_check(*, base_model, method: str, objective: str) -> None:
    if method != "full":
        return
    if objective == "dpo":
        raise ApplicationError(
            "DPO needs the base model as its reference, which full fine-tuning changes: choose "
            "LoRA, QLoRA or DoRA for DPO, or ORPO, which needs no reference."
        )
    memory = devices.device_info()["memory_bytes"]
    if not estimates.full_fits(base_model.parameter_count, memory):
        need = estimates.full_bytes(base_model.parameter_count) / 2**30
        raise ApplicationError(
            f"Full fine-tuning of {base_model.name} needs about {need:.1f} GiB; the worker has "
            f"{memory / 2**30:.1f} GiB. Choose LoRA, QLoRA or DoRA."
        )
