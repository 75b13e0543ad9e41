"""A curator's way through moderation to a version: bulk approval by filter, page sizes, the empty queue."""

import re

import pytest
from django.urls import reverse

from datanets import services
from datanets.models import LedgerEntry, Record
from tests.datanets.conftest import jsonl_file, qa
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def ingest(datanet, contributor, rows):
    services.upload_ingest(
        upload=services.upload_create(datanet=datanet, contributor=contributor, file=jsonl_file(rows))
    )


def shown(response):
    return re.findall(r'name="records" value="(\d+)"', response.content.decode())


def test_approve_all_that_match_a_filter_after_confirming_the_count(client, datanet, curator, contributor):
    ingest(datanet, contributor, [qa(i) for i in range(60)])
    services.record_create(datanet=datanet, contributor=curator, value=qa(999))  # the curator's own
    client.force_login(curator)
    url = reverse("moderation")
    page = client.get(url, {"datanet": datanet.slug, "size": "100"})
    assert len(shown(page)) == 61 and "Approve all 61 that match…" in page.content.decode()
    assert len(shown(client.get(url, {"size": "7"}))) == 25  # only the sizes offered

    confirm = client.get(url, {"datanet": datanet.slug, "confirm": "approve_matching"}).content.decode()
    assert "Approve all <strong>60</strong> pending records that match this filter" in confirm
    assert 'name="expected" value="60"' in confirm
    assert Record.objects.filter(status="approved").count() == 0  # asking approves nothing

    stale = client.post(f"{url}?datanet={datanet.slug}", {"action": "approve_matching", "expected": "59"}, follow=True)
    assert "The queue changed: 60 records match now" in stale.content.decode()
    assert Record.objects.filter(status="approved").count() == 0

    done = client.post(
        f"{url}?datanet={datanet.slug}&confirm=approve_matching", {"action": "approve_matching", "expected": "60"}
    )
    assert done.status_code == 302 and "confirm" not in done["Location"]
    assert Record.objects.filter(status="approved").count() == 60
    assert Record.objects.get(contributor=curator).status == "pending"  # nobody moderates their own
    assert LedgerEntry.objects.filter(event="record.approved").count() == 60


def test_the_empty_queue_leads_on_to_the_datanet_and_its_versions(client, datanet, curator, contributor):
    client.force_login(curator)
    detail = client.get(reverse("datanet_detail", args=[datanet.slug])).content.decode()
    assert "Publish a version" not in detail and 'id="publish-needs-records"' in detail

    ingest(datanet, contributor, [qa(1), qa(2)])
    services.records_moderate(records_qs=Record.objects.all(), by=curator, approve=True)
    empty = client.get(reverse("moderation")).content.decode()
    assert "Nothing to review here." in empty and "Approve selected" not in empty
    assert reverse("datanet_detail", args=[datanet.slug]) + "#versions" in empty
    assert "Publish a version" in client.get(reverse("datanet_detail", args=[datanet.slug])).content.decode()


def test_a_published_version_offers_training_to_those_who_may(client, datanet, curator, contributor):
    ingest(datanet, contributor, [qa(1)])
    services.records_moderate(records_qs=Record.objects.all(), by=curator, approve=True)
    version = services.version_publish(datanet=datanet, by=curator)
    url = reverse("version_detail", args=[datanet.slug, version.number])
    client.force_login(curator)
    assert f'href="{reverse("wizard_start")}?version={version.pk}"' in client.get(url).content.decode()
    client.logout()
    assert "Train on this version" not in client.get(url).content.decode()
    client.force_login(UserFactory())
    assert "Train on this version" in client.get(url).content.decode()
