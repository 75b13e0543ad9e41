"""Celery tasks of the Datanets app."""

from celery import shared_task

from . import services
from .models import Upload


@shared_task(name="datanets.upload_ingest")
def upload_ingest_task(upload_id: int) -> str:
    upload = Upload.objects.select_related("datanet", "contributor").filter(pk=upload_id).first()
    if upload is None:
        return "missing"
    return services.upload_ingest(upload=upload).status
