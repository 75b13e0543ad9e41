"""Fine-tune jobs: use cases (``services``), the run on a worker (``run``), files (``outputs``), the influence
of records on the adapter (``influence``) and the Celery tasks (``tasks``).

The names callers use are re-exported here: ``from training import jobs; jobs.job_create(...)``.
"""

from training.jobs.outputs import job_outputs, work_dir, write_versions
from training.jobs.run import job_run
from training.jobs.services import (
    job_cancel,
    job_config,
    job_create,
    job_default_name,
    job_estimate,
    job_retry,
    jobs_reap,
    licence_conflicts,
    queue_position,
)

__all__ = [
    "job_cancel",
    "job_config",
    "job_create",
    "job_default_name",
    "job_estimate",
    "job_outputs",
    "job_retry",
    "job_run",
    "jobs_reap",
    "licence_conflicts",
    "queue_position",
    "work_dir",
    "write_versions",
]
