"""Celery tasks of the Datanets app."""

from celery import shared_task

from . import services
from .models import Upload


# Acknowledged when done: a worker killed before it finished leaves the message to be delivered again,
# and a second run of a finished (or reaped) upload does nothing.
@shared_task(name="datanets.upload_ingest", acks_late=True)
def upload_ingest_task(upload_id: int) -> str:
    upload = Upload.objects.select_related("datanet", "contributor").filter(pk=upload_id).first()
    if upload is None:
        return "missing"
    return services.upload_ingest(upload=upload).status


@shared_task(name="datanets.uploads_reap")
def uploads_reap_task() -> list[int]:
    from .reaping import uploads_reap

    return uploads_reap()
