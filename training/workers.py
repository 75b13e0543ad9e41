"""Which workers are online for the gpu queue, and what devices each has (for the wizard's review); which
queue a job needing N devices goes to.

A gpu-queue worker with N devices (settings.WORKER_DEVICES, or its GPUs) also consumes "gpu.2" ... "gpu.N":
a job that needs N devices goes to "gpu.N" and waits there until a worker that has them is free."""

from celery.signals import celeryd_after_setup, worker_ready
from django.conf import settings
from django.core.cache import cache

REGISTRY = "workers:devices"
QUEUE = "gpu"


def queue_for(devices: int) -> str:
    return QUEUE if devices <= 1 else f"{QUEUE}.{devices}"


def device_count(info: dict | None = None) -> int:
    """Devices this worker offers a job: WORKER_DEVICES, else what ``device_info`` found."""
    from .devices import device_info

    return settings.WORKER_DEVICES or (info or device_info())["devices"]


@celeryd_after_setup.connect
def consume_device_queues(sender=None, instance=None, **kwargs):
    queues = instance.app.amqp.queues
    if QUEUE in queues.consume_from:
        for devices in range(2, device_count() + 1):
            queues.select_add(queue_for(devices))


@worker_ready.connect
def register_device(sender=None, **kwargs):
    from .devices import device_info

    registry = cache.get(REGISTRY) or {}
    info = device_info()
    registry[sender.hostname] = {**info, "devices": device_count(info)}
    cache.set(REGISTRY, registry, timeout=None)


def online_gpu_workers(timeout: float = 1.0) -> list[dict]:
    from modelfactory.celery import app

    replies = app.control.inspect(timeout=timeout).active_queues() or {}
    registry = cache.get(REGISTRY) or {}
    workers = []
    for name, queues in sorted(replies.items()):
        if any(q["name"] == QUEUE for q in queues):
            known = registry.get(name, {"device": "unknown", "memory_bytes": 0})
            workers.append({"name": name, "devices": 1, **known})
    return workers
