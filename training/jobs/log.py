"""The fine-tune job's log: the last lines of what happened, shown on the job page."""

from django.utils import timezone

from training.models import FineTuneJob

LOG_LINES = 50


def job_log_append(pk: int, message: str) -> None:
    """Add a timestamped line to the job's log (the last LOG_LINES are kept)."""
    job = FineTuneJob.objects.only("logs").get(pk=pk)
    logs = (job.logs + [f"{timezone.now():%H:%M:%S} {message}"])[-LOG_LINES:]
    FineTuneJob.objects.filter(pk=pk).update(logs=logs)
