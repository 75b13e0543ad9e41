"""Uploads whose ingest died with its worker: found and failed, so none shows "32%" forever.

An ingest runs in one database transaction, so a worker killed mid-ingest stored nothing; what is left
is the row saying "validating". The reaper asks the workers which ingests they run and fails the
others that have been validating for a while.
"""

from __future__ import annotations

import ast
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from .models import Upload

INGEST_TASK = "datanets.upload_ingest"


def ingests_running() -> set[int] | None:
    """Upload ids that some worker is ingesting now; None when no worker answered (all are down)."""
    from modelfactory.celery import app

    replies = app.control.inspect(timeout=settings.HEALTH_WORKER_TIMEOUT).active()
    if replies is None:
        return None
    running = set()
    for tasks in replies.values():
        for task in tasks:
            args = task.get("args") or []
            args = ast.literal_eval(args) if isinstance(args, str) else args  # older workers send a repr
            if task.get("name") == INGEST_TASK and args:
                running.add(int(args[0]))
    return running


def uploads_reap(*, older_than_s: int | None = None) -> list[int]:
    """Fail the uploads still validating that no worker ingests any more; returns their ids."""
    since = timezone.now() - timedelta(seconds=settings.UPLOAD_STALE_S if older_than_s is None else older_than_s)
    stuck = list(Upload.objects.filter(status=Upload.Status.VALIDATING, created_at__lt=since))
    if not stuck:
        return []
    running = ingests_running() or set()
    reaped = []
    for upload in stuck:
        if upload.pk in running:
            continue
        failed = Upload.objects.filter(pk=upload.pk, status=Upload.Status.VALIDATING).update(  # unless it just finished
            status=Upload.Status.FAILED,
            finished_at=timezone.now(),
            message="The worker stopped while ingesting this file, so nothing was stored. Upload it again.",
        )
        if failed:
            if upload.file:  # a failed upload leaves nothing behind
                upload.file.delete(save=False)
                Upload.objects.filter(pk=upload.pk).update(file="")
            reaped.append(upload.pk)
    return reaped
