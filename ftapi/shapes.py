"""Files, fine-tune jobs, their events and checkpoints as OpenAI's objects (ids like ``ftjob-7``,
timestamps in unix seconds), and the ``fine_tuned_model`` names that /v1/chat/completions takes."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

from django.utils import timezone

from datanets.models import Record, Upload
from training import presets
from training.models import FineTuneJob

from .models import ApiFile

STATUS = {  # FineTuneJob status -> OpenAI's
    FineTuneJob.Status.QUEUED: "queued",
    FineTuneJob.Status.RUNNING: "running",
    FineTuneJob.Status.EVALUATING: "running",
    FineTuneJob.Status.ATTRIBUTING: "running",
    FineTuneJob.Status.SUCCEEDED: "succeeded",
    FineTuneJob.Status.FAILED: "failed",
    FineTuneJob.Status.CANCELLED: "cancelled",
}
FINE_TUNED = re.compile(r"^ft:.*:ftjob-(\d+)$")


def unix(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment else None


def file_object(file: ApiFile) -> dict:
    pending = getattr(file, "pending", None)  # a list annotates it: one query for the page
    if pending is None:
        pending = (
            0 if file.version_id else Record.objects.filter(upload=file.upload, status=Record.Status.PENDING).count()
        )
    details = f"{pending} records await moderation in {file.datanet.name}." if pending else None
    return {
        "id": file.public_id,
        "object": "file",
        "bytes": file.bytes,
        "created_at": unix(file.created_at),
        "filename": file.filename,
        "purpose": file.purpose,
        "status": "processed" if file.upload.status == Upload.Status.DONE else "error",
        "status_details": details,
        "datanet": file.datanet.slug,
        "datanet_version": file.version.number if file.version_id else None,
        "records": file.upload.records_added,
    }


# Jobs -----------------------------------------------------------------------------------------


def _api(job: FineTuneJob):
    return getattr(job, "api", None)  # None for a job started in the browser


def organization(job: FineTuneJob) -> str:
    api = _api(job)
    return api.team.slug if api else job.owner.username


def fine_tuned_model(job: FineTuneJob) -> str | None:
    """OpenAI's ft:<base>:<organisation>:<suffix>:<job id>, once the job has an adapter to chat with."""
    if job.status != FineTuneJob.Status.SUCCEEDED:
        return None
    api = _api(job)
    return f"ft:{job.base_model.slug}:{organization(job)}:{api.suffix if api else ''}:ftjob-{job.pk}"


def job_id_of_model(name: str) -> str | None:
    """``ftjob-N`` of a fine_tuned_model name, or None when it is not one."""
    match = FINE_TUNED.match(name)
    return f"ftjob-{match.group(1)}" if match else None


def _number(value):
    return int(value) if isinstance(value, float) and value.is_integer() else value


def objective(job: FineTuneJob) -> str:
    return (job.config or {}).get("objective") or "sft"


def hyperparameters(job: FineTuneJob) -> dict:
    """What the run uses (the preset's values where "auto" was asked); DPO's beta too."""
    config = job.config or {}
    rate = config.get("learning_rate")
    preset_rate = presets.learning_rate(job.preset, objective(job)) if job.preset in presets.PRESETS else None
    multiplier = round(rate / preset_rate, 6) if preset_rate and rate else None
    settings = {
        "n_epochs": _number(config.get("epochs")),
        "batch_size": config.get("batch_size"),
        "learning_rate_multiplier": _number(multiplier),
    }
    if objective(job) == "dpo":
        settings["beta"] = _number(config.get("beta", 0.1))
    return settings


def method(job: FineTuneJob, settings: dict) -> dict:
    """OpenAI's method object; an ORPO job from the browser shows as "orpo", a type OpenAI lacks."""
    kind = {"sft": "supervised"}.get(objective(job), objective(job))
    return {"type": kind, kind: {"hyperparameters": settings}}


def job_object(job: FineTuneJob) -> dict:
    api = _api(job)
    error = None
    if job.status == FineTuneJob.Status.FAILED:
        error = {"code": "training_failed", "message": job.error or "The run failed.", "param": None}
    settings = hyperparameters(job)
    return {
        "object": "fine_tuning.job",
        "id": f"ftjob-{job.pk}",
        "model": job.base_model.name,
        "created_at": unix(job.created_at),
        "finished_at": unix(job.finished_at),
        "fine_tuned_model": fine_tuned_model(job),
        "organization_id": organization(job),
        "result_files": [],
        "status": STATUS[job.status],
        "training_file": api.training_file if api else None,
        "validation_file": (api.validation_file or None) if api else None,
        "hyperparameters": settings,
        "trained_tokens": (job.evaluation or {}).get("tokens"),
        "error": error,
        "seed": (job.config or {}).get("seed", 42),
        "estimated_finish": None,
        "integrations": [],
        "metadata": api.metadata if api else None,
        "user_provided_suffix": api.suffix or None if api else None,
        "method": method(job, settings),
        "name": job.name,
        "preset": job.preset,
    }


# Events and checkpoints -------------------------------------------------------------------------


def _event(job, key: str, moment, message: str, kind: str = "message", data=None, level: str = "info") -> dict:
    return {
        "object": "fine_tuning.job.event",
        "id": f"ftevent-{job.pk}-{key}",
        "created_at": unix(moment),
        "level": level,
        "message": message,
        "type": kind,
        "data": data or {},
    }


def _log_events(job: FineTuneJob) -> list[dict]:
    """The job's log lines ("HH:MM:SS message", UTC), dated from the job's creation on."""
    out, day, last = [], job.created_at.astimezone(UTC).date(), None
    for line in job.logs or []:
        stamp, _, message = line.partition(" ")
        try:
            clock = datetime.strptime(stamp, "%H:%M:%S").time()
        except ValueError:
            clock, message = (last or job.created_at).time(), line
        moment = datetime.combine(day, clock, tzinfo=UTC)
        if last and moment < last:  # past midnight
            day, moment = day + timedelta(days=1), moment + timedelta(days=1)
        last = moment
        digest = hashlib.sha256(line.encode()).hexdigest()[:12]
        out.append(
            _event(job, f"log-{digest}", moment, message, level="error" if "fail" in message.lower() else "info")
        )
    return out


def _step_events(job: FineTuneJob) -> list[dict]:
    """One metrics event per step, timed between the start and the last write (steps carry no clock)."""
    points = (job.metrics or {}).get("train") or []
    if not points or not job.started_at:
        return []
    total = job.total_steps or points[-1]["step"]
    span = (job.finished_at or timezone.now()) - job.started_at
    return [
        _event(
            job,
            f"step-{p['step']}",
            job.started_at + span * (p["step"] / max(total, 1)),
            f"Step {p['step']}/{total}: training loss={p['loss']:.4f}",
            "metrics",
            {"step": p["step"], "total_steps": total, "train_loss": p["loss"], "learning_rate": p.get("lr")},
        )
        for p in points
    ]


def job_events(job: FineTuneJob) -> list[dict]:
    """Newest first, as OpenAI lists them."""
    events = [_event(job, "created", job.created_at, f"Created fine-tuning job: ftjob-{job.pk}")]
    if job.started_at:
        events.append(_event(job, "started", job.started_at, "Fine-tuning job started"))
    events += _log_events(job) + _step_events(job)
    ending = {
        FineTuneJob.Status.SUCCEEDED: ("The job has successfully completed", "info"),
        FineTuneJob.Status.FAILED: (f"The job failed: {job.error}", "error"),
        FineTuneJob.Status.CANCELLED: ("The job was cancelled", "info"),
    }.get(job.status)
    if ending:
        last = _event(job, job.status, job.finished_at, ending[0], level=ending[1])
        # The worker logs its last line just after it sets finished_at, at times in the next second: the end
        # stays the newest event (appended last, it wins the tie in the stable sort below).
        last["created_at"] = max([e["created_at"] or 0 for e in events] + [last["created_at"] or 0])
        events.append(last)
    order = {"created": 0, "started": 1}
    events.sort(key=lambda e: (e["created_at"] or 0, order.get(e["id"].split("-", 2)[-1], 2)))
    return events[::-1]


def job_checkpoints(job: FineTuneJob) -> list[dict]:
    """The finished adapter: the one checkpoint kept, and chat takes its name."""
    name = fine_tuned_model(job)
    if name is None:
        return []
    metrics = job.metrics or {}
    train, held_out = metrics.get("train") or [], metrics.get("eval") or []
    step = (job.evaluation or {}).get("steps") or job.step
    return [
        {
            "object": "fine_tuning.job.checkpoint",
            "id": f"ftckpt-{job.pk}-{step}",
            "created_at": unix(job.finished_at),
            "fine_tuned_model_checkpoint": name,
            "fine_tuning_job_id": f"ftjob-{job.pk}",
            "step_number": step,
            "metrics": {
                "step": step,
                "train_loss": train[-1]["loss"] if train else None,
                "valid_loss": held_out[-1]["loss"] if held_out else None,
            },
        }
    ]
