"""A fine-tune job's run on a GPU-queue worker: claim it, beat, train, store what came out.

Idempotent and resumable: a finished job, or one another live worker holds, is left alone; a job whose
worker died continues from its last checkpoint in its work directory. A job on several devices runs
under torchrun (training/launch.py); one on several nodes is led by the worker that claimed it, and
``job_follow`` runs each other node's ranks on another worker.
"""

from __future__ import annotations

import shutil
import threading
import time
from datetime import timedelta
from pathlib import Path

from celery import current_app
from django.conf import settings
from django.db import close_old_connections
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from training import display, launch, trainer, workers
from training.jobs.influence import influence_store
from training.jobs.log import job_log_append
from training.jobs.outputs import outputs_store, work_dir, write_versions
from training.models import FineTuneJob

EVALUATION_KEYS = (
    "base",
    "tuned",
    "task",
    "samples",
    "steps",
    "total_steps",
    "best_step",
    "epochs",
    "tokens",
    "trainable_parameters",
    "train_examples",
    "eval_examples",
    "loss_on",
    "method",
    "precision",
    "train_seconds",
    "wall_seconds",
)
WRITE_EVERY_S = 1.0
CANCEL_CHECK_EVERY_S = 1.0
PHASES = ("preparing", "loading", "evaluating", "attributing")  # trainer events that start a phase of the run


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


def failure_message(error: BaseException, job: FineTuneJob) -> str:
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


class RunProgress:
    """The trainer's events turned into the job's row (metrics, phase, status, log), written at most every
    WRITE_EVERY_S for routine events; and whether the owner asked the run to stop."""

    def __init__(self, job: FineTuneJob, *, checkpoint_exists: bool):
        self.pk = job.pk
        self.metrics = dict(job.metrics or {})
        self.metrics.setdefault("train", [])
        self.metrics.setdefault("eval", [])
        self.last_write = 0.0
        self.should_stop = StopCheck(job.pk)
        if job.attempts > 1 and not checkpoint_exists:
            job_log_append(self.pk, "No checkpoint of the earlier attempt is here: training starts again from step 0.")
            self.metrics["train"] = []
            self.metrics.pop("checkpoint_step", None)

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        if kind == "log":
            job_log_append(self.pk, event["message"])
        elif kind == "resumed":
            FineTuneJob.objects.filter(pk=self.pk).update(resumed_from_step=event["step"])
            self.metrics["train"] = [p for p in self.metrics["train"] if p["step"] <= event["step"]]
        else:
            self._record(kind, event)
            self._write(kind, event)

    def _record(self, kind: str, event: dict) -> None:
        """What the job page shows: the phase (also before the first step), the curves, the latest step."""
        metrics = self.metrics
        if kind in PHASES or kind == "step":
            metrics["phase"] = "training" if kind == "step" else kind
        if kind in ("preparing", "loading"):
            job_log_append(self.pk, f"{display.PHASES[kind]}…")
        if kind == "checkpoint":
            metrics["checkpoint_step"] = event["step"]  # the reaper's log line names it
        elif kind == "step":
            keys = ("step", "loss", "lr", "tokens_per_s", "margin", "accuracy")  # preference runs: margin, accuracy
            metrics["train"].append({k: event[k] for k in keys if k in event})
            metrics["last"] = {k: event[k] for k in (*keys, "total_steps", "elapsed_s", "remaining_s") if k in event}
        elif kind == "eval":
            extra = {k: event[k] for k in ("margin", "accuracy") if k in event}
            metrics["eval"].append({"step": event["step"], "loss": round(event["loss"], 5), **extra})
        elif kind == "attributing":
            metrics["attribution"] = {"done": event["done"], "total": event["total"]}

    def _write(self, kind: str, event: dict) -> None:
        fields = {"metrics": self.metrics, "heartbeat_at": timezone.now()}
        if "last" in self.metrics:  # every write carries the latest step, whatever event caused it
            fields.update(step=self.metrics["last"]["step"], total_steps=self.metrics["last"]["total_steps"])
        if kind == "evaluating":
            fields["status"] = FineTuneJob.Status.EVALUATING
        if kind == "attributing":
            fields["status"] = FineTuneJob.Status.ATTRIBUTING
        now = time.monotonic()
        routine = kind == "step" or (kind == "attributing" and 0 < event["done"] < event["total"])
        last_step = kind == "step" and event["step"] == event["total_steps"]
        if not routine or last_step or now - self.last_write >= WRITE_EVERY_S:
            FineTuneJob.objects.filter(pk=self.pk).update(**fields)
            self.last_write = now


class StopCheck:
    """Whether the owner asked the run to stop, asked of the database at most every CANCEL_CHECK_EVERY_S."""

    def __init__(self, pk: int):
        self.pk, self.checked_at, self.cancel = pk, 0.0, False

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self.checked_at >= CANCEL_CHECK_EVERY_S:
            self.checked_at = now
            self.cancel = FineTuneJob.objects.filter(pk=self.pk, cancel_requested=True).exists()
        return self.cancel


def _train(job: FineTuneJob, directory: Path, progress: RunProgress) -> dict:
    """Write the training data (once), run the trainer into ``directory/output``, store the influence."""
    directory.mkdir(parents=True, exist_ok=True)
    data_path = directory / "data.jsonl"
    progress({"event": "preparing"})
    if not data_path.exists():
        write_versions(job.datanet_versions.all(), data_path)
    eval_path = None
    if job.validation_version_id:
        eval_path = directory / "validation.jsonl"
        write_versions([job.validation_version], eval_path)
    config = trainer.TrainConfig.from_dict({**job.config, "base_model_path": job.base_model.local_path})
    output = directory / "output"
    if config.devices * config.nodes > 1:  # several processes, under torchrun

        def companions(address: str, port: int) -> None:  # training/jobs/tasks.py, job_follow_task
            for node in range(1, config.nodes):
                args = (job.pk, node, address, port)
                current_app.send_task("gpu.fine_tune_follow", args, queue=workers.queue_for(config.devices))

        result = launch.train(
            config,
            data_path,
            output,
            progress,
            progress.should_stop,
            eval_path,
            address=settings.WORKER_ADDRESS,
            companions=companions,
        )
    else:
        result = trainer.train(config, data_path, output, progress, progress.should_stop, eval_path)
    if result.get("influence"):
        influence_store(job=job, output_dir=output)
    return result


def _finish(job: FineTuneJob, directory: Path, status: str, message: str, **fields) -> str:
    FineTuneJob.objects.filter(pk=job.pk).update(status=status, finished_at=timezone.now(), **fields)
    if status != FineTuneJob.Status.FAILED:  # a failed run keeps its checkpoint for the retry
        shutil.rmtree(directory, ignore_errors=True)
    job_log_append(job.pk, message)
    return str(status)


def job_run(*, job_id: int, worker: str) -> str:
    """Run the job to its end on this worker; returns what became of it."""
    job = FineTuneJob.objects.filter(pk=job_id).first()
    if job is None or job.finished:
        return "finished"
    if job.cancel_requested and job.status == FineTuneJob.Status.QUEUED:
        FineTuneJob.objects.filter(pk=job.pk).update(status=FineTuneJob.Status.CANCELLED, finished_at=timezone.now())
        return "cancelled"
    if not _claim(job.pk, worker):
        return "taken"
    job.refresh_from_db()
    job.device = trainer.device_name() + (f" x{job.devices}" if job.devices > 1 else "")
    job.device += f" on {job.nodes} nodes" if job.nodes > 1 else ""
    job.save(update_fields=["device"])
    heartbeat = Heartbeat(job.pk)
    heartbeat.start()
    directory = work_dir(job)
    progress = RunProgress(job, checkpoint_exists=(directory / "output" / "checkpoint" / "state.pt").exists())
    try:
        result = _train(job, directory, progress)
        evaluation = {k: result.get(k) for k in EVALUATION_KEYS}
        metrics = {**progress.metrics, "eval": result["history"]["eval"]}
        prefix = outputs_store(job=job, output_dir=directory / "output")
        message = "Succeeded: adapter, config and metrics stored."
        fields = {"evaluation": evaluation, "metrics": metrics, "adapter_path": prefix}
        return _finish(job, directory, FineTuneJob.Status.SUCCEEDED, message, **fields)
    except trainer.Cancelled:
        return _finish(job, directory, FineTuneJob.Status.CANCELLED, "Cancelled; the worker is free.")
    except Exception as error:  # every failure ends the job with a message a person can act on
        message = failure_message(error, job)
        return _finish(job, directory, FineTuneJob.Status.FAILED, message, error=message)
    finally:
        heartbeat.done.set()


def job_follow(*, job_id: int, node: int, address: str, port: int, worker: str) -> str:
    """Node ``node`` of a job's run that another worker claimed and leads (training/launch.py, follow): this
    worker's ranks join its rendezvous at ``address:port`` and train in the job's shared work directory."""
    job = FineTuneJob.objects.filter(pk=job_id).first()
    if job is None or job.finished:
        return "finished"
    output = work_dir(job) / "output"
    if not (output / "run.json").exists():
        job_log_append(job.pk, f"Node {node + 1} on {worker} cannot see the job's work directory: share JOB_WORK_DIR.")
        return "no shared work directory"
    job_log_append(job.pk, f"Node {node + 1} of {job.nodes} joins on {worker}")
    code = launch.follow(output, node, (address, port), StopCheck(job.pk))  # else it ends with node 0's ranks
    return "done" if code == 0 else f"ended ({code})"
