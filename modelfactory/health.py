"""Health checks for /healthz: database, broker, storage, live Celery workers, base models."""

import uuid

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection


def check_database() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"vendor": connection.vendor}


def check_broker() -> dict:
    from modelfactory.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        conn.default_channel.client.ping()
        return {"transport": conn.transport.driver_type}


def check_storage() -> dict:
    name = default_storage.save(f"healthz/{uuid.uuid4().hex}.txt", ContentFile(b"ok"))
    try:
        with default_storage.open(name) as handle:
            if handle.read() != b"ok":
                raise OSError("storage returned other bytes than were written")
    finally:
        default_storage.delete(name)
    return {"backend": type(default_storage._wrapped).__name__}


def check_workers() -> dict:
    from modelfactory.celery import app

    replies = app.control.inspect(timeout=settings.HEALTH_WORKER_TIMEOUT).active_queues() or {}
    workers = {name: sorted(q["name"] for q in queues) for name, queues in replies.items()}
    if not workers:
        raise RuntimeError("no Celery worker answered")
    served = {queue for queues in workers.values() for queue in queues}
    missing = sorted({"default", "gpu"} - served)
    if missing:
        raise RuntimeError(f"no worker consumes queue(s): {', '.join(missing)}")
    # The inference worker (playground, /v1/) is reported, not required: training works without it.
    return {"workers": workers, "inference": "inference" in served}


def check_base_models() -> dict:
    from training.models import BaseModel

    count = BaseModel.objects.filter(enabled=True, status=BaseModel.Status.READY).count()
    if not count:
        raise RuntimeError("no enabled base model is ready; run `manage.py import_base_model --bundled`")
    return {"enabled": count}


CHECKS = {
    "database": check_database,
    "broker": check_broker,
    "storage": check_storage,
    "workers": check_workers,
    "base_models": check_base_models,
}


def run_checks() -> tuple[bool, dict]:
    results = {}
    for name, check in CHECKS.items():
        try:
            results[name] = {"status": "up", **check()}
        except Exception as error:  # a health check reports every failure, whatever its kind
            results[name] = {"status": "down", "error": f"{type(error).__name__}: {error}"}
    healthy = all(result["status"] == "up" for result in results.values())
    return healthy, results
