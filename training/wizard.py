"""Reads for the fine-tune wizard: the versions to offer, the base model to preselect, the presets' values,
and on the review step which online workers the run fits."""

from dataclasses import MISSING, fields

from django.db.models import OuterRef, Q, Subquery

from datanets import policy as datanet_policy
from datanets.models import DatanetVersion

from . import presets, trainer, workers
from .jobs.services import job_estimate
from .models import BaseModel


def wizard_versions(user, *, include=()):
    """The latest version of every Datanet this user may train on, and the versions in ``include`` (an
    older one chosen from its page) where the user may train on them."""
    datanets = datanet_policy.trainable_datanets(user)
    latest = DatanetVersion.objects.filter(datanet=OuterRef("datanet")).order_by("-number").values("pk")[:1]
    wanted = [int(pk) for pk in include if str(pk).isdigit()]
    return (
        DatanetVersion.objects.filter(datanet__in=datanets)
        .filter(Q(pk=Subquery(latest)) | Q(pk__in=wanted))
        .select_related("datanet")
        .order_by("datanet__name", "-number")
    )


def ready_models():
    return BaseModel.objects.filter(enabled=True, status=BaseModel.Status.READY).order_by("name")


def only_model(models_qs) -> int | None:
    """The base model to preselect: the only one there is."""
    pks = list(models_qs.values_list("pk", flat=True)[:2])
    return pks[0] if len(pks) == 1 else None


def trainer_defaults() -> dict:
    """The trainer's value of every setting with a plain default (what a run uses where nobody chose)."""
    return {f.name: f.default for f in fields(trainer.TrainConfig) if f.default is not MISSING}


def preset_values(*, method: str, records: int) -> dict[str, dict]:
    """Each preset's value of every advanced field, sized to ``records`` records, trainer defaults filling in
    what a preset leaves alone: what an empty advanced field means."""
    defaults = trainer_defaults()
    out = {}
    for key in presets.PRESETS:
        values = {**defaults, **presets.resolve(key, method, records=records)}
        out[key] = {name: values.get(name) for name in presets.ADVANCED_FIELDS}
    return out


def review_estimates(*, base_model: BaseModel, versions, config: dict) -> tuple[list[dict], list[dict]]:
    """The online GPU-queue workers, and the run's estimate on each kind of device among them (the CPU when
    none is online) with the workers whose memory holds its peak."""
    online = workers.online_gpu_workers()
    estimates = []
    for device in sorted({w.get("device", "cpu") for w in online} or {"cpu"}):
        estimate = job_estimate(
            base_model=base_model, versions=versions, config=config, device="cuda" if device == "cuda" else "cpu"
        )
        peak = estimate["peak_memory_bytes"]
        fits = [
            w
            for w in online
            if w.get("device") == device
            and w.get("memory_bytes", 0) >= peak
            and w.get("devices", 1) >= config.get("devices", 1)
        ]
        estimates.append({"device": device, "estimate": estimate, "fits": fits})
    return online, estimates
