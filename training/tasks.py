"""Celery tasks of the training app."""

from celery import shared_task

from modelfactory.exceptions import ApplicationError

from . import services
from .models import BaseModel


@shared_task(name="training.base_model_import")
def base_model_import_task(base_model_id: int) -> str:
    base_model = BaseModel.objects.get(pk=base_model_id)
    try:
        services.base_model_import(base_model=base_model)
    except ApplicationError as error:
        return error.message
    return base_model.status
