"""No upload stays stuck: an ingest whose worker was killed is failed by the reaper, and an ingest
records its outcome even while the cache (Redis) is down."""

import os
import signal

from django.core.files.uploadedfile import SimpleUploadedFile

from datanets import services
from datanets.models import Record, Upload
from datanets.reaping import uploads_reap
from tests.datanets.conftest import jsonl_file, qa
from tests.waiting import wait_until


def test_an_ingest_killed_with_its_worker_is_failed_by_the_reaper(celery_worker_process, datanet, contributor):
    rows = "".join(
        f'{{"instruction": "Question {i}?", "output": "Answer number {i} is long enough."}}\n' for i in range(300_000)
    )
    upload = services.upload_create(
        datanet=datanet, contributor=contributor, file=SimpleUploadedFile("big.jsonl", rows.encode())
    )
    wait_until(lambda: Upload.objects.get(pk=upload.pk).status, lambda s: s != "queued", timeout=60, every=0.05)
    assert Upload.objects.get(pk=upload.pk).status == "validating"
    os.kill(celery_worker_process.process.pid, signal.SIGKILL)  # mid-ingest: no clean-up, no ack
    celery_worker_process.process.wait()
    waiting = services.upload_create(datanet=datanet, contributor=contributor, file=jsonl_file([qa(1)]))

    assert uploads_reap(older_than_s=0) == [upload.pk]
    upload.refresh_from_db()
    assert upload.status == "failed" and "The worker stopped while ingesting" in upload.message
    assert not upload.file and Record.objects.count() == 0
    assert Upload.objects.get(pk=waiting.pk).status == "queued"  # not started: its message waits in the queue


def test_an_ingest_records_its_outcome_while_the_cache_is_down(datanet, contributor, settings):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    }  # nothing listens there
    upload = services.upload_create(datanet=datanet, contributor=contributor, file=jsonl_file([qa(1), qa(2)]))
    upload = services.upload_ingest(upload=Upload.objects.get(pk=upload.pk))
    assert upload.status == "done" and Record.objects.count() == 2
    assert services.upload_live(upload)["percent"] == 100
