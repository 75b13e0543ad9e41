"""Which workers are online for the gpu queue, and what device each has (for the wizard's review)."""

from celery.signals import worker_ready
from django.core.cache import cache

REGISTRY = "workers:devices"


@worker_ready.connect
def register_device(sender=None, **kwargs):
    from .devices import device_info

    registry = cache.get(REGISTRY) or {}
    registry[sender.hostname] = device_info()
    cache.set(REGISTRY, registry, timeout=None)


def online_gpu_workers(timeout: float = 1.0) -> list[dict]:
    from modelfactory.celery import app

    replies = app.control.inspect(timeout=timeout).active_queues() or {}
    registry = cache.get(REGISTRY) or {}
    workers = []
    for name, queues in sorted(replies.items()):
        if any(q["name"] == "gpu" for q in queues):
            workers.append({"name": name, **registry.get(name, {"device": "unknown", "memory_bytes": 0})})
    return workers
