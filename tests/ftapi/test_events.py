"""A job's events as the OpenAI API lists them: newest first, the end of the job always newest."""

from datetime import UTC, datetime, timedelta

from ftapi.shapes import job_events
from training.models import FineTuneJob


def test_the_end_of_a_job_is_its_newest_event_though_its_last_log_line_came_a_second_later():
    created = datetime(2026, 12, 7, 9, 58, 59, 500000, tzinfo=UTC)
    finished = created + timedelta(seconds=2)  # 09:59:01.5; the worker's last line was logged at 09:59:02
    job = FineTuneJob(
        pk=7,
        status=FineTuneJob.Status.SUCCEEDED,
        created_at=created,
        started_at=created + timedelta(seconds=1),
        finished_at=finished,
        logs=["09:59:00 Loading the model and tokenising the data…", "09:59:02 Succeeded: adapter stored."],
        metrics={"train": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]},
        total_steps=2,
    )
    messages = [e["message"] for e in job_events(job)]
    assert messages[0] == "The job has successfully completed" and messages[1] == "Succeeded: adapter stored."
    assert messages[-1] == "Created fine-tuning job: ftjob-7"
