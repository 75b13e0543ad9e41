"""Celery tasks of the training app."""

from celery import shared_task

from modelfactory.celery import gpu_task
from modelfactory.exceptions import ApplicationError

from . import devices, services, workers  # noqa: F401 - workers registers its signal
from .models import BaseModel


@shared_task(name="training.base_model_import")
def base_model_import_task(base_model_id: int) -> str:
    base_model = BaseModel.objects.get(pk=base_model_id)
    try:
        services.base_model_import(base_model=base_model)
    except ApplicationError as error:
        return error.message
    return base_model.status


@gpu_task(name="gpu.device_info")
def device_info_task() -> dict:
    """Which accelerator a GPU-queue worker has: the wizard compares it with a job's memory estimate."""
    return devices.device_info()


@gpu_task(name="gpu.fine_tune")
def job_run_task(job_id: int) -> str:
    """Idempotent and resumable: safe to deliver twice or after the previous worker died."""
    from . import jobs

    return jobs.job_run(job_id=job_id, worker=job_run_task.request.hostname or "worker")


@shared_task(name="training.jobs_reap")
def jobs_reap_task() -> list[int]:
    from . import jobs

    return jobs.jobs_reap()
