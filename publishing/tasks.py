"""Celery tasks of the publishing app."""

from celery import shared_task

from . import services


@shared_task(name="publishing.publication_run")
def publication_run_task(publication_id: int) -> str:
    """Idempotent: a publication that is not queued any more is left as it is."""
    return services.publication_run(publication_id=publication_id)
