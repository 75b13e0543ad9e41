"""Datanet pages through the test client: create, contribute by form, withdraw, htmx progress polling."""

import pytest
from django.urls import reverse

from datanets import services
from datanets.models import Datanet, Record, Upload
from tests.datanets.conftest import jsonl_file, qa
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_team_admin_creates_a_datanet_with_curators(client):
    owner = UserFactory()
    team = MembershipFactory(user=owner, role="owner").team
    UserFactory(username="reviewer")
    client.force_login(owner)
    form = {
        "team": team.pk,
        "name": "Maritime Law",
        "description": "Cases and answers",
        "domain_tags": "law, maritime",
        "schema": "chat",
        "license": "CC-BY-4.0",
        "visibility": "permissioned",
        "guidelines": "Cite the statute.",
        "curators": "reviewer, ghost",
    }
    response = client.post(reverse("datanet_create"), form)
    assert "No such user(s): ghost" in response.content.decode()
    assert not Datanet.objects.exists()
    response = client.post(reverse("datanet_create"), {**form, "curators": "reviewer"})
    datanet = Datanet.objects.get()
    assert response["Location"] == reverse("datanet_detail", args=[datanet.slug])
    assert (datanet.slug, datanet.tags, list(datanet.curators.values_list("username", flat=True))) == (
        "maritime-law",
        ["law", "maritime"],
        ["reviewer"],
    )


def test_a_member_cannot_create_a_datanet_for_the_team(client):
    member = UserFactory()
    team = MembershipFactory(user=member, role="member").team
    client.force_login(member)
    response = client.post(reverse("datanet_create"), {"team": team.pk, "name": "X", "schema": "text"})
    assert response.status_code == 200 and not Datanet.objects.exists()


def test_chat_record_through_the_form_and_withdraw(client, datanet, contributor):
    datanet.schema = "chat"
    datanet.save()
    client.force_login(contributor)
    url = reverse("datanet_contribute", args=[datanet.slug])
    response = client.post(url, {"kind": "record", "user": "What is a murmur?", "assistant": "An extra heart sound."})
    assert response.status_code == 302
    record = Record.objects.get()
    assert record.content == {
        "messages": [
            {"role": "user", "content": "What is a murmur?"},
            {"role": "assistant", "content": "An extra heart sound."},
        ]
    }
    duplicate = client.post(url, {"kind": "record", "user": "What is a murmur?", "assistant": "An extra heart sound."})
    assert "already in the Datanet" in duplicate.content.decode()
    client.post(reverse("record_withdraw", args=[record.pk]))
    assert Record.objects.get().status == "withdrawn"
    page = client.get(reverse("my_contributions")).content.decode()
    assert "Withdrawn" in page


def test_upload_page_polls_until_done_then_stops(client, datanet, contributor):
    client.force_login(contributor)
    response = client.post(
        reverse("datanet_contribute", args=[datanet.slug]), {"kind": "upload", "file": jsonl_file([qa(1)])}
    )
    upload = Upload.objects.get()
    assert response["Location"] == reverse("upload_detail", args=[upload.pk])
    poll = client.get(reverse("upload_detail", args=[upload.pk]) + "?poll=1", headers={"HX-Request": "true"})
    assert poll.status_code == 200 and 'hx-trigger="every 1s"' in poll.content.decode()
    services.upload_ingest(upload=upload)
    poll = client.get(reverse("upload_detail", args=[upload.pk]) + "?poll=1", headers={"HX-Request": "true"})
    assert poll.status_code == 286  # htmx stops polling
    assert "1 records added for review" in poll.content.decode()


def test_upload_over_the_limit_is_refused_on_the_page(client, datanet, contributor, settings):
    settings.MAX_UPLOAD_BYTES = 20
    client.force_login(contributor)
    response = client.post(
        reverse("datanet_contribute", args=[datanet.slug]), {"kind": "upload", "file": jsonl_file([qa(1), qa(2)])}
    )
    assert "the upload limit is 20 bytes" in response.content.decode()
    assert not Upload.objects.exists()
