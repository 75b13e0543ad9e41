"""Publishing runs as a task on a real worker: the request returns at once, a progress page follows it, and a
failure leaves nothing visible and is retried."""

import uuid

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse

from datanets.models import LedgerEntry
from publishing.models import Adapter, AdapterRecord, Publication
from tests.conftest import WorkerProcess, database_url_for_workers
from tests.factories import BaseModelFactory, MembershipFactory, UserFactory
from tests.waiting import wait_until
from training.models import FineTuneJob

POLL = {"HX-Request": "true"}


def test_the_progress_page_shows_the_phase_and_rows_and_stops_polling_when_done(client, trainer_user):
    job = FineTuneJob.objects.create(
        name="Codes", owner=trainer_user, base_model=BaseModelFactory(), config={}, status="succeeded"
    )
    team = MembershipFactory(user=trainer_user, role="owner").team
    publication = Publication.objects.create(
        job=job,
        team=team,
        requested_by=trainer_user,
        name="Codes Expert",
        status="running",
        phase="records",
        rows_done=5000,
        rows_total=12000,
    )
    url = reverse("publication_detail", args=[publication.pk])
    client.force_login(trainer_user)
    page = client.get(url).content.decode()
    assert "Writing records.jsonl" in page and "5000 of 12000 records written" in page
    assert 'hx-trigger="every 1s"' in page and 'value="5000"' in page
    poll = client.get(f"{url}?poll=1", headers=POLL)
    assert poll.status_code == 200 and 'id="publication-live"' in poll.content.decode()
    assert "<html" not in poll.content.decode()

    Publication.objects.filter(pk=publication.pk).update(status="failed", error="This job's adapter files are gone.")
    poll = client.get(f"{url}?poll=1", headers=POLL)
    assert poll.status_code == 286 and poll["HX-Refresh"] == "true"  # the page reloads once, then stops
    page = client.get(url).content.decode()
    assert "adapter files are gone" in page and "Retry" in page and "hx-trigger" not in page

    client.force_login(UserFactory())
    assert client.get(url).status_code == 404  # someone else's publication: as missing
    assert client.post(reverse("publication_retry", args=[publication.pk])).status_code == 404


def wait_finished(publication, worker):
    return wait_until(
        lambda: Publication.objects.select_related("adapter").get(pk=publication.pk),
        lambda p: p.finished,
        timeout=180,
        describe=lambda: worker.log_path.read_text()[-3000:],
    )


def test_a_failed_publication_leaves_nothing_visible_and_is_retried(
    client, succeeded_job, trainer_user, team, tmp_path
):
    slug = f"codes-{uuid.uuid4().hex[:8]}"
    # A file where the zip's folder goes: storing the zip fails late, after records.jsonl and the manifest.
    blocker = default_storage.save(f"adapters/{slug}/v1", ContentFile(b"not a folder"))
    client.force_login(trainer_user)
    form = {"name": slug, "visibility": "team", "team": team.pk}
    first = client.post(reverse("job_publish", args=[succeeded_job.pk]), form)
    again = client.post(reverse("job_publish", args=[succeeded_job.pk]), {**form, "name": "Another name"})
    publication = Publication.objects.get()  # the second request returned the queued one
    assert first.url == again.url == reverse("publication_detail", args=[publication.pk])
    assert "Waiting for a worker" in client.get(first.url).content.decode()

    worker = WorkerProcess(database_url_for_workers(), tmp_path / "worker.log", queues="default")
    try:
        failed = wait_finished(publication, worker)
        assert failed.status == "failed" and "is not a directory" in failed.error, failed.error
        assert "nothing was published" in failed.error
        assert not Adapter.objects.exists() and not AdapterRecord.objects.exists()
        assert not LedgerEntry.objects.filter(event="adapter.published").exists()
        assert default_storage.listdir(f"adapters/{slug}") == ([], ["v1"])  # the blocker; no zip
        assert slug not in client.get(reverse("adapter_list")).content.decode()
        page = client.get(first.url).content.decode()
        assert "is not a directory" in page and "Retry" in page

        default_storage.delete(blocker)
        retried = client.post(reverse("publication_retry", args=[publication.pk]))
        assert retried.url == first.url
        done = wait_finished(publication, worker)
    finally:
        worker.stop()
    assert done.status == "succeeded" and done.error == "", done.error
    adapter = done.adapter
    assert (adapter.slug, adapter.version, adapter.team) == (slug, 1, team)
    assert AdapterRecord.objects.filter(adapter=adapter).count() == 24
    assert LedgerEntry.objects.filter(event="adapter.published").count() == 1
    page = client.get(first.url).content.decode()
    assert reverse("adapter_detail", args=[slug, 1]) in page and reverse("adapter_download", args=[slug, 1]) in page
    assert client.get(f"{first.url}?poll=1", headers=POLL).status_code == 286
    assert slug in client.get(reverse("adapter_list")).content.decode()


def test_a_publication_whose_worker_died_does_not_block_the_job(trainer_user, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    from publishing import services

    job = FineTuneJob.objects.create(
        name="Codes",
        owner=trainer_user,
        base_model=BaseModelFactory(),
        config={},
        status="succeeded",
        adapter_path=f"jobs/test-{uuid.uuid4().hex[:8]}",
    )
    default_storage.save(f"{job.adapter_path}/adapter/adapter_model.safetensors", ContentFile(b"weights"))
    team = MembershipFactory(user=trainer_user, role="owner").team
    request = {"job": job, "by": trainer_user, "team": team, "name": "Codes Expert"}
    with django_capture_on_commit_callbacks(execute=False) as dispatched:
        first = services.publication_request(**request)
        assert services.publication_request(**request) == first  # while it runs, asking again returns it
    assert len(dispatched) == 1

    an_hour_ago = timezone.now() - timedelta(hours=1)
    Publication.objects.filter(pk=first.pk).update(status="running", started_at=an_hour_ago, progress_at=an_hour_ago)
    with django_capture_on_commit_callbacks(execute=False):
        second = services.publication_request(**request)
    first.refresh_from_db()
    assert second != first and second.status == "queued"
    assert first.status == "failed" and "stopped reporting progress" in first.error
