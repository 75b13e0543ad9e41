"""Celery tasks of the training app: base-model imports; the fine-tune job tasks are in training/jobs/tasks.py
(imported here so that the worker registers them). Which accelerator a GPU worker has, it says itself when it
starts (training/workers.py)."""

from celery import shared_task

from modelfactory.exceptions import ApplicationError

from . import services, workers  # noqa: F401 - workers registers its signal
from .jobs import tasks as job_tasks  # noqa: F401 - registers the fine-tune tasks with the worker
from .models import BaseModel


@shared_task(name="training.base_model_import")
def base_model_import_task(base_model_id: int) -> str:
    base_model = BaseModel.objects.get(pk=base_model_id)
    try:
        services.base_model_import(base_model=base_model)
    except ApplicationError as error:
        return error.message
    return base_model.status
