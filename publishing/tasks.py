"""Celery tasks of the publishing app (default queue)."""

from celery import shared_task

from . import exports, services


@shared_task(name="publishing.publication_run")
def publication_run_task(publication_id: int) -> str:
    """Idempotent: a publication that is not queued any more is left as it is."""
    return services.publication_run(publication_id=publication_id)


@shared_task(name="publishing.export_run")
def export_run_task(export_id: int) -> str:
    """Idempotent: an export that is not queued any more is left as it is."""
    return exports.export_run(export_id=export_id)
