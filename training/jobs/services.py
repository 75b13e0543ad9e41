"""Fine-tune job use cases: configure and estimate from the wizard, create, cancel, retry, reap orphans.
The run itself, on a GPU-queue worker, is ``training.jobs.run``."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from datanets import policy as datanet_policy
from datanets.models import DatanetVersion
from modelfactory.exceptions import ApplicationError
from training import display, estimates, modeling, objectives, presets, trainer, workers
from training.jobs.log import job_log_append
from training.models import BaseModel, FineTuneJob


def job_config(
    *, base_model: BaseModel, method: str, preset: str, overrides: dict | None = None, records: int = 0
) -> dict:
    """The run's settings: the preset's, sized to a Datanet of ``records`` records, with the overrides."""
    try:
        resolved = presets.resolve(preset, method, overrides, records=records)
        config = trainer.TrainConfig.from_dict({**resolved, "base_model_path": base_model.local_path})
        config.validate()
    except (TypeError, ValueError) as error:
        raise ApplicationError(f"These settings do not work: {error}.") from error
    return resolved


def job_estimate(*, base_model: BaseModel, versions, config: dict, device: str = "cpu") -> dict:
    """Peak memory and wall time of the whole run (loading, training, evaluation, attribution)."""
    tokens = sum(v.token_count for v in versions)
    records = sum(v.record_count for v in versions)
    per_record = estimates.record_tokens(tokens / max(records, 1))
    held_out = min(config.get("max_eval_records", 100), round(records * config.get("eval_fraction", 0.05)))
    trained = records - held_out
    shape = estimates.model_shape(base_model.local_path)
    settings = trainer.TrainConfig.from_dict({**config, "base_model_path": base_model.local_path})
    devices = settings.devices * settings.nodes
    sharded = settings.parallel == "fsdp" and devices > 1
    method = config["method"]
    if method == "auto":  # as modeling.pick_method decides it, without the worker's free memory at hand
        method = "lora" if sharded else "qlora" if device == "cuda" else "auto"
    result = estimates.estimate(
        parameters=base_model.parameter_count,
        shape=shape,
        method=method,
        rank=config["lora_r"],
        batch_size=config["batch_size"],
        seq_len=min(config["max_seq_length"], int(per_record)),
        train_tokens=int(trained * per_record * config["epochs"]),
        device=device,
        questions=min(trained, 40) + min(held_out, 40),
        attributed_tokens=int(records * per_record),
        compiled=modeling.compiles(settings, device, "lora" if method == "auto" else method) and not sharded,
        devices=devices,
        sharded=sharded,
    )
    return {**result, "records": records, "tokens": tokens}


def licence_conflicts(versions) -> list[str]:
    licences = {v.license for v in versions}
    warnings = []
    if any(lic.startswith("CC-BY-NC") for lic in licences) and len(licences) > 1:
        warnings.append("A non-commercial licence (CC-BY-NC) is mixed with others: the adapter inherits the NC term.")
    if any("SA" in lic for lic in licences) and len(licences) > 1:
        warnings.append("A share-alike licence is mixed with others: the adapter must be shared alike.")
    if "LicenseRef-Proprietary" in licences and len(licences) > 1:
        warnings.append("Proprietary data is mixed with openly licensed data: check the terms of each.")
    return warnings


def job_default_name(*, owner, base_model: BaseModel, versions: list[DatanetVersion], preset: str) -> str:
    """A name that tells the owner's jobs apart: base model, data, preset and the job's number."""
    data = ", ".join(f"{v.datanet.name} v{v.number}" for v in versions)
    number = FineTuneJob.objects.filter(owner=owner).count() + 1
    return f"{base_model.name} on {data}, {display.preset_name(preset)} #{number}"


def job_create(
    *,
    owner,
    name: str,
    base_model: BaseModel,
    versions: list[DatanetVersion],
    method: str,
    preset: str,
    overrides: dict | None = None,
    validation_version: DatanetVersion | None = None,
) -> FineTuneJob:
    """``validation_version``: records held out to evaluate on, instead of a share of the training data."""
    if not versions:
        raise ApplicationError("Pick at least one Datanet version to train on.")
    for version in [*versions, *([validation_version] if validation_version else [])]:
        if not datanet_policy.can_train_on(owner, version.datanet):
            raise ApplicationError(f"You may not train on {version.datanet.name}.")
    if not (base_model.enabled and base_model.status == BaseModel.Status.READY):
        raise ApplicationError(f"{base_model.name} is not ready for training.")
    objective = (overrides or {}).get("objective") or "sft"
    objectives.objective_check(objective=objective, versions=versions)
    if validation_version:
        objectives.objective_check(objective=objective, versions=[validation_version])
        overrides = {**(overrides or {}), "eval_fraction": 0}  # every training record trains
    objectives.full_check(base_model=base_model, method=method, objective=objective)
    records = sum(v.record_count for v in versions)
    config = job_config(base_model=base_model, method=method, preset=preset, overrides=overrides, records=records)
    with transaction.atomic():
        job = FineTuneJob.objects.create(
            name=name.strip() or job_default_name(owner=owner, base_model=base_model, versions=versions, preset=preset),
            owner=owner,
            base_model=base_model,
            method=method,
            preset=preset,
            config=config,
            estimate=job_estimate(base_model=base_model, versions=versions, config=config),
            validation_version=validation_version,
        )
        job.datanet_versions.set(versions)
        job_enqueue(job)
    return job


def job_enqueue(job: FineTuneJob) -> None:
    """Once the transaction commits: the job's run, on the queue of the workers that have the devices it needs."""
    from training.jobs.tasks import job_run_task

    queue = workers.queue_for(job.devices)
    transaction.on_commit(lambda: job_run_task.apply_async((job.pk,), queue=queue))


def queue_position(job: FineTuneJob) -> int | None:
    """The job's place among the queued jobs that need as many devices (they wait on one queue)."""
    if job.status != FineTuneJob.Status.QUEUED:
        return None
    same = Q(config__devices=job.devices) if job.devices > 1 else Q(config__devices__isnull=True) | Q(config__devices=1)
    earlier = FineTuneJob.objects.filter(same, status=FineTuneJob.Status.QUEUED, created_at__lt=job.created_at)
    return earlier.count() + 1


def job_cancel(*, job: FineTuneJob, by) -> FineTuneJob:
    if job.owner_id != by.pk and not by.is_staff:
        raise ApplicationError("Only the job's owner cancels it.")
    if job.finished:
        raise ApplicationError("This job has already finished.")
    if job.status == FineTuneJob.Status.QUEUED:
        updated = FineTuneJob.objects.filter(pk=job.pk, status=FineTuneJob.Status.QUEUED).update(
            status=FineTuneJob.Status.CANCELLED, cancel_requested=True, finished_at=timezone.now()
        )
        if updated:
            job.refresh_from_db()
            return job
    FineTuneJob.objects.filter(pk=job.pk).update(cancel_requested=True)
    job.refresh_from_db()
    return job


def job_retry(*, job: FineTuneJob, by) -> FineTuneJob:
    if job.owner_id != by.pk and not by.is_staff:
        raise ApplicationError("Only the job's owner retries it.")
    if job.status not in (FineTuneJob.Status.FAILED, FineTuneJob.Status.CANCELLED):
        raise ApplicationError("Only failed or cancelled jobs can be retried.")
    with transaction.atomic():
        job.status, job.error, job.cancel_requested, job.finished_at = FineTuneJob.Status.QUEUED, "", False, None
        job.save(update_fields=["status", "error", "cancel_requested", "finished_at"])
        job_enqueue(job)
    return job


def jobs_reap(*, stale_after_s: int | None = None) -> list[int]:
    """Re-queue running jobs whose worker stopped beating (killed, lost its machine)."""
    stale = timezone.now() - timedelta(seconds=stale_after_s or settings.JOB_HEARTBEAT_STALE_S)
    orphans = FineTuneJob.objects.filter(status__in=FineTuneJob.WORKING, heartbeat_at__lt=stale).only(
        "config", "metrics"
    )
    for job in orphans:
        saved = (job.metrics or {}).get("checkpoint_step")
        where = f"its last checkpoint, at step {saved}" if saved else "step 0: it saved no checkpoint"
        message = f"The worker stopped answering; the job goes back to the queue and resumes from {where}."
        job_log_append(job.pk, message)
        job_enqueue(job)
    return [job.pk for job in orphans]
