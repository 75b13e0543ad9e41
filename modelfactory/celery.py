"""The Celery app: queue "default" for web-side work, "gpu" for long accelerator work, "inference" for chats."""

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelfactory.settings")

app = Celery("modelfactory")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (Queue("default"), Queue("gpu"), Queue("inference"))
app.conf.task_default_queue = "default"
# Tasks named "gpu.*" are the long, idempotent, resumable ones: they go to the gpu queue and are
# declared with acks_late, so a killed worker hands them on. GPU workers run with
# --prefetch-multiplier=1 (see modelfactory/launcher.py and docker-compose.yml) so one slow run
# never holds a second one hostage.
# "inference.*" tasks go to the inference worker, which keeps base models loaded for its lifetime
# (serving/tasks.py); web processes never load a model.
app.conf.task_routes = {"gpu.*": {"queue": "gpu"}, "inference.*": {"queue": "inference"}}
app.autodiscover_tasks()


def gpu_task(name: str, **options):
    """Declare a long accelerator task: routed to the gpu queue, acknowledged only when done, and
    handed to another worker if this one dies. Such a task must be idempotent and resumable."""
    if not name.startswith("gpu."):
        raise ValueError("GPU task names start with 'gpu.' so that task_routes sends them to the gpu queue")
    return app.task(name=name, acks_late=True, reject_on_worker_lost=True, **options)
