"""Celery tasks of the publishing app (default queue)."""

from celery import shared_task

from . import services
from .exports.tasks import export_run_task  # noqa: F401 - registered with the app's other tasks


@shared_task(name="publishing.publication_run")
def publication_run_task(publication_id: int) -> str:
    """Idempotent: a publication that is not queued any more is left as it is."""
    return services.publication_run(publication_id=publication_id)
