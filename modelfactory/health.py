"""Health checks for /healthz: database, broker, storage, live Celery workers, base models.

The slow checks (a worker broadcast waits HEALTH_WORKER_TIMEOUT; storage writes a file) run at most
once per HEALTH_CACHE_S for every caller together: one request runs them, the others read its result.
"""

import time
import uuid
from datetime import UTC, datetime

from django.conf import settings
from django.core.cache import cache
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
SLOW = ("storage", "workers")
FRESH_KEY, LAST_KEY, LOCK_KEY = "healthz:slow", "healthz:slow:last", "healthz:slow:lock"


def _run(name: str) -> dict:
    try:
        return {"status": "up", **CHECKS[name]()}
    except Exception as error:  # a health check reports every failure, whatever its kind
        return {"status": "down", "error": f"{type(error).__name__}: {error}"}


def _run_slow() -> dict:
    checked_at = datetime.now(UTC).isoformat()  # to the microsecond: callers can tell one check from another
    return {name: {**_run(name), "checked_at": checked_at} for name in SLOW}


def _wait_for_other_check() -> dict | None:
    """Another request holds the lock and is checking: its result, rather than a broadcast of our own."""
    deadline = time.monotonic() + settings.HEALTH_WORKER_TIMEOUT + 2
    while (result := cache.get(FRESH_KEY)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return result or cache.get(LAST_KEY)


def slow_checks() -> dict:
    """The storage and worker checks, fresh or at most HEALTH_CACHE_S old, run by one caller at a time."""
    result = None
    try:
        result = cache.get(FRESH_KEY)
        if result is not None:
            return result
        if not cache.add(LOCK_KEY, 1, timeout=int(settings.HEALTH_WORKER_TIMEOUT) + 10):
            return _wait_for_other_check() or _run_slow()
        try:
            result = _run_slow()
            cache.set(FRESH_KEY, result, timeout=settings.HEALTH_CACHE_S)
            cache.set(LAST_KEY, result, timeout=3600)
            return result
        finally:
            cache.delete(LOCK_KEY)
    except Exception:  # the cache is Redis: when it is down, check directly (the broker check says why)
        return result or _run_slow()


def run_checks() -> tuple[bool, dict]:
    slow = slow_checks()
    results = {name: slow[name] if name in slow else _run(name) for name in CHECKS}
    healthy = all(result["status"] == "up" for result in results.values())
    return healthy, results
