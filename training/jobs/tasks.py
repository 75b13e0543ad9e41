"""Celery tasks of fine-tune jobs (registered through training.tasks)."""

from celery import shared_task

from modelfactory.celery import gpu_task
from training.jobs.run import job_follow, job_run
from training.jobs.services import jobs_reap


@gpu_task(name="gpu.fine_tune")
def job_run_task(job_id: int) -> str:
    """Idempotent and resumable: safe to deliver twice or after the previous worker died."""
    return job_run(job_id=job_id, worker=job_run_task.request.hostname or "worker")


@gpu_task(name="gpu.fine_tune_follow")
def job_follow_task(job_id: int, node: int, address: str, port: int) -> str:
    """One more node of a multi-node run: ends when the run does; a stale call (an ended attempt) does nothing."""
    return job_follow(
        job_id=job_id, node=node, address=address, port=port, worker=job_follow_task.request.hostname or "worker"
    )


@shared_task(name="training.jobs_reap")
def jobs_reap_task() -> list[int]:
    return jobs_reap()
