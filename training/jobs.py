"""Fine-tune job use cases: create from the wizard, run on a worker, cancel, retry, reap orphans."""

from __future__ import annotations

import shutil
import threading
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import close_old_connections, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from datanets import policy as datanet_policy
from datanets import services as datanet_services
from datanets.models import DatanetVersion
from modelfactory.exceptions import ApplicationError

from . import display, estimates, objectives, presets, trainer
from .attribution import influence_store
from .models import BaseModel, FineTuneJob

LOG_LINES = 50
EVALUATION_KEYS = (
    "base", "tuned", "task", "samples", "steps", "total_steps", "best_step", "epochs", "tokens",
    "trainable_parameters", "train_examples", "eval_examples", "loss_on", "method", "precision",
    "train_seconds", "wall_seconds",
)  # fmt: skip
WRITE_EVERY_S = 1.0
PHASES = ("preparing", "loading", "evaluating", "attributing")  # trainer events that start a phase of the run


def job_config(*, base_model: BaseModel, method: str, preset: str, overrides: dict | None = None,
               records: int = 0) -> dict:  # fmt: skip
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
    result = estimates.estimate(
        parameters=base_model.parameter_count,
        shape=shape,
        method="qlora" if config["method"] == "auto" and device == "cuda" else config["method"],
        rank=config["lora_r"],
        batch_size=config["batch_size"],
        seq_len=min(config["max_seq_length"], int(per_record)),
        train_tokens=int(trained * per_record * config["epochs"]),
        device=device,
        questions=min(trained, 40) + min(held_out, 40),
        attributed_tokens=int(records * per_record),
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


def job_create(*, owner, name: str, base_model: BaseModel, versions: list[DatanetVersion], method: str,
               preset: str, overrides: dict | None = None) -> FineTuneJob:  # fmt: skip
    if not versions:
        raise ApplicationError("Pick at least one Datanet version to train on.")
    for version in versions:
        if not datanet_policy.can_train_on(owner, version.datanet):
            raise ApplicationError(f"You may not train on {version.datanet.name}.")
    if not (base_model.enabled and base_model.status == BaseModel.Status.READY):
        raise ApplicationError(f"{base_model.name} is not ready for training.")
    objective = (overrides or {}).get("objective") or "sft"
    objectives.objective_check(objective=objective, versions=versions)
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
        )
        job.datanet_versions.set(versions)
        from .tasks import job_run_task

        job_run_task.delay_on_commit(job.pk)
    return job


def queue_position(job: FineTuneJob) -> int | None:
    if job.status != FineTuneJob.Status.QUEUED:
        return None
    return FineTuneJob.objects.filter(status=FineTuneJob.Status.QUEUED, created_at__lt=job.created_at).count() + 1


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
        from .tasks import job_run_task

        job_run_task.delay_on_commit(job.pk)
    return job


def jobs_reap(*, stale_after_s: int | None = None) -> list[int]:
    """Re-queue running jobs whose worker stopped beating (killed, lost its machine)."""
    from .tasks import job_run_task

    stale = timezone.now() - timedelta(seconds=stale_after_s or settings.JOB_HEARTBEAT_STALE_S)
    orphans = dict(
        FineTuneJob.objects.filter(status__in=FineTuneJob.WORKING, heartbeat_at__lt=stale).values_list("pk", "metrics")
    )
    for pk, metrics in orphans.items():
        saved = (metrics or {}).get("checkpoint_step")
        where = f"its last checkpoint, at step {saved}" if saved else "step 0: it saved no checkpoint"
        _append_log(pk, f"The worker stopped answering; the job goes back to the queue and resumes from {where}.")
        job_run_task.delay(pk)
    return list(orphans)


def _append_log(pk: int, message: str) -> None:
    job = FineTuneJob.objects.only("logs").get(pk=pk)
    logs = (job.logs + [f"{timezone.now():%H:%M:%S} {message}"])[-LOG_LINES:]
    FineTuneJob.objects.filter(pk=pk).update(logs=logs)


def _claim(pk: int, worker: str) -> bool:
    """Take the job for this worker: a queued one, or a running one whose worker went silent."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.JOB_HEARTBEAT_STALE_S)
    return bool(
        FineTuneJob.objects.filter(pk=pk, cancel_requested=False)
        .filter(Q(status=FineTuneJob.Status.QUEUED) | Q(status__in=FineTuneJob.ACTIVE, heartbeat_at__lt=stale))
        .update(
            status=FineTuneJob.Status.RUNNING,
            worker=worker,
            heartbeat_at=now,
            attempts=F("attempts") + 1,
            started_at=Coalesce(F("started_at"), now),
        )
    )


class Heartbeat(threading.Thread):
    """Beats every few seconds while the job runs, also through model loading and evaluation."""

    def __init__(self, pk: int, every_s: float = 5.0):
        super().__init__(daemon=True)
        self.pk, self.every_s, self.done = pk, every_s, threading.Event()

    def run(self):
        while not self.done.wait(self.every_s):
            FineTuneJob.objects.filter(pk=self.pk).update(heartbeat_at=timezone.now())
        close_old_connections()


def work_dir(job: FineTuneJob) -> Path:
    """Local scratch (data, checkpoints) of one job; named with its creation time so that a reused
    primary key can never pick up another job's checkpoint."""
    return Path(settings.JOB_WORK_DIR) / f"{job.pk}-{job.created_at:%Y%m%dT%H%M%S%f}"


def write_training_data(job: FineTuneJob, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for version in job.datanet_versions.all():
            for line in datanet_services.version_export_lines(version):
                handle.write(line)


def _failure_message(error: BaseException, job: FineTuneJob) -> str:
    text = str(error)
    if isinstance(error, MemoryError) or "out of memory" in text.lower():
        return (
            f"Out of memory on {job.device or 'the worker'}. Retry with a smaller batch size "
            f"(now {job.config.get('batch_size')}) or max sequence length (now {job.config.get('max_seq_length')}), "
            "or choose QLoRA instead of LoRA."
        )
    if isinstance(error, ValueError):
        return f"The run could not start: {text}"
    return f"The run failed ({type(error).__name__}: {text[:500]}). Retry it; if it fails again, tell an admin."


def _record_phase(pk: int, metrics: dict, kind: str) -> None:
    """What the job page says the run is doing, also before its first step; the slow starts are logged."""
    if kind in PHASES or kind == "step":
        metrics["phase"] = "training" if kind == "step" else kind
    if kind in ("preparing", "loading"):
        _append_log(pk, f"{display.PHASES[kind]}…")


def job_run(*, job_id: int, worker: str) -> str:
    """Run the job to its end on this worker. Idempotent: finished jobs and jobs another live worker
    holds are left alone; a job whose worker died continues from its last checkpoint."""
    job = FineTuneJob.objects.filter(pk=job_id).first()
    if job is None or job.finished:
        return "finished"
    if job.cancel_requested and job.status == FineTuneJob.Status.QUEUED:
        FineTuneJob.objects.filter(pk=job.pk).update(status=FineTuneJob.Status.CANCELLED, finished_at=timezone.now())
        return "cancelled"
    if not _claim(job.pk, worker):
        return "taken"
    job.refresh_from_db()
    job.device = trainer.device_name()
    job.save(update_fields=["device"])
    heartbeat = Heartbeat(job.pk)
    heartbeat.start()
    directory = work_dir(job)
    output = directory / "output"
    state = {"last_write": 0.0, "last_cancel_check": 0.0, "cancel": False}
    metrics = dict(job.metrics or {})
    metrics.setdefault("train", [])
    metrics.setdefault("eval", [])
    if job.attempts > 1 and not (output / "checkpoint" / "state.pt").exists():
        _append_log(job.pk, "No checkpoint of the earlier attempt is here: training starts again from step 0.")
        metrics["train"] = []
        metrics.pop("checkpoint_step", None)

    def on_event(event: dict) -> None:
        kind = event["event"]
        if kind == "log":
            _append_log(job.pk, event["message"])
            return
        if kind == "resumed":
            FineTuneJob.objects.filter(pk=job.pk).update(resumed_from_step=event["step"])
            metrics["train"] = [p for p in metrics["train"] if p["step"] <= event["step"]]
            return
        _record_phase(job.pk, metrics, kind)
        if kind == "checkpoint":
            metrics["checkpoint_step"] = event["step"]  # the reaper's log line names it
        if kind == "step":
            keys = ("step", "loss", "lr", "tokens_per_s", "margin", "accuracy")  # preference runs: margin, accuracy
            metrics["train"].append({k: event[k] for k in keys if k in event})
            metrics["last"] = {k: event[k] for k in (*keys, "total_steps", "elapsed_s", "remaining_s") if k in event}
        elif kind == "eval":
            metrics["eval"].append({"step": event["step"], "loss": round(event["loss"], 5),
                                    **{k: event[k] for k in ("margin", "accuracy") if k in event}})  # fmt: skip
        fields = {"metrics": metrics, "heartbeat_at": timezone.now()}
        if "last" in metrics:  # every write carries the latest step, whatever event caused it
            fields.update(step=metrics["last"]["step"], total_steps=metrics["last"]["total_steps"])
        if kind == "evaluating":
            fields["status"] = FineTuneJob.Status.EVALUATING
        if kind == "attributing":
            metrics["attribution"] = {"done": event["done"], "total": event["total"]}
            fields["status"] = FineTuneJob.Status.ATTRIBUTING
        now = time.monotonic()
        routine = kind == "step" or (kind == "attributing" and 0 < event["done"] < event["total"])
        last_step = kind == "step" and event["step"] == event["total_steps"]
        if not routine or last_step or now - state["last_write"] >= WRITE_EVERY_S:
            FineTuneJob.objects.filter(pk=job.pk).update(**fields)
            state["last_write"] = now

    def should_stop() -> bool:
        now = time.monotonic()
        if now - state["last_cancel_check"] >= 1.0:
            state["last_cancel_check"] = now
            state["cancel"] = FineTuneJob.objects.filter(pk=job.pk, cancel_requested=True).exists()
        return state["cancel"]

    try:
        directory.mkdir(parents=True, exist_ok=True)
        data_path = directory / "data.jsonl"
        on_event({"event": "preparing"})
        if not data_path.exists():
            write_training_data(job, data_path)
        config = trainer.TrainConfig.from_dict({**job.config, "base_model_path": job.base_model.local_path})
        result = trainer.train(config, data_path, output, progress=on_event, should_stop=should_stop)
        if result.get("influence"):
            influence_store(job=job, output_dir=output)
        prefix = f"jobs/{job.pk}"
        for file in sorted(p for p in output.rglob("*") if p.is_file()):
            name = f"{prefix}/{file.relative_to(output).as_posix()}"
            if default_storage.exists(name):
                default_storage.delete(name)
            with open(file, "rb") as handle:
                default_storage.save(name, File(handle))
        FineTuneJob.objects.filter(pk=job.pk).update(
            status=FineTuneJob.Status.SUCCEEDED,
            evaluation={k: result.get(k) for k in EVALUATION_KEYS},
            metrics={**metrics, "eval": result["history"]["eval"]},
            adapter_path=prefix,
            finished_at=timezone.now(),
        )
        shutil.rmtree(directory, ignore_errors=True)
        _append_log(job.pk, "Succeeded: adapter, config and metrics stored.")
        return "succeeded"
    except trainer.Cancelled:
        FineTuneJob.objects.filter(pk=job.pk).update(status=FineTuneJob.Status.CANCELLED, finished_at=timezone.now())
        shutil.rmtree(directory, ignore_errors=True)
        _append_log(job.pk, "Cancelled; the worker is free.")
        return "cancelled"
    except Exception as error:  # every failure ends the job with a message a person can act on
        message = _failure_message(error, job)
        FineTuneJob.objects.filter(pk=job.pk).update(
            status=FineTuneJob.Status.FAILED, error=message, finished_at=timezone.now()
        )
        _append_log(job.pk, message)
        return "failed"
    finally:
        heartbeat.done.set()


def job_outputs(job: FineTuneJob) -> dict:
    """Names of the stored outputs (adapter files, config, metrics)."""
    if not job.adapter_path:
        return {}
    names = {}
    for name in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "config.json", "metrics.json"):
        full = f"{job.adapter_path}/{name}"
        if default_storage.exists(full):
            names[name] = full
    return names
