from celery import shared_task

from .services import export_run


@shared_task(name="publishing.export_run")
def export_run_task(export_id: int) -> str:
    """Idempotent: an export that is not queued any more is left as it is."""
    return export_run(export_id=export_id)
