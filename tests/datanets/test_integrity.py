"""Published versions are immutable in fact: admin edits, recomputed hashes, and the version check."""

import hashlib
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from datanets import records, services
from datanets.ledger import ledger_verify
from datanets.models import LedgerEntry, Record
from tests.datanets.conftest import qa


@pytest.fixture
def published(datanet, contributor, curator):
    added = [services.record_create(datanet=datanet, contributor=contributor, value=qa(i)) for i in range(3)]
    services.records_moderate(records_qs=Record.objects.filter(pk__in=[r.pk for r in added]), by=curator, approve=True)
    return services.version_publish(datanet=datanet, by=curator)


def change_form(record, **content):
    return {
        "datanet": record.datanet_id,
        "contributor": record.contributor_id,
        "upload": "",
        "line_number": "",
        "content": json.dumps(content or record.content),
        "near_duplicate_of": "",
        "status": record.status,
        "reviewed_by": record.reviewed_by_id or "",
        "reviewed_at_0": "",
        "reviewed_at_1": "",
        "rejection_reason": "",
    }


def test_a_record_of_a_published_version_is_read_only_in_admin(admin_client, published):
    record = published.records.first()
    url = f"/admin/datanets/record/{record.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert 'name="content"' not in page and 'name="status"' not in page
    tampered = change_form(record, instruction="Something else", output="Entirely.")
    admin_client.post(url, tampered)
    unchanged = Record.objects.get(pk=record.pk)
    assert unchanged.content == record.content and unchanged.content_hash == record.content_hash
    assert admin_client.post(f"/admin/datanets/record/{record.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Record.objects.filter(pk=record.pk).exists()
    call_command("check_versions")


def test_an_admin_content_edit_recomputes_the_hash_and_is_ledgered(admin_client, datanet, contributor):
    record = services.record_create(datanet=datanet, contributor=contributor, value=qa(1))
    url = f"/admin/datanets/record/{record.pk}/change/"
    response = admin_client.post(url, change_form(record, instruction="  What is finding 1?  ", output="Normal."))
    assert response.status_code == 302, response.content.decode()[:3000]
    record.refresh_from_db()
    expected = records.make_record({"instruction": "What is finding 1?", "output": "Normal."}, "instruction")
    assert record.content == {"instruction": "What is finding 1?", "input": "", "output": "Normal."}
    assert record.content_hash == expected.content_hash == hashlib.sha256(expected.canonical.encode()).hexdigest()
    entry = LedgerEntry.objects.get(event="record.edited")
    assert entry.payload["content_hash"] == record.content_hash and entry.payload["record_id"] == record.pk
    assert ledger_verify()[1] is None
    invalid = admin_client.post(url, change_form(record, instruction="", output="x"))
    assert invalid.status_code == 200 and "is empty" in invalid.content.decode()


def test_check_versions_names_a_record_changed_behind_its_back(published, capsys):
    call_command("check_versions")
    assert "All 1 Datanet versions match" in capsys.readouterr().out
    record = published.records.order_by("id").first()
    Record.objects.filter(pk=record.pk).update(content={**record.content, "output": "Tampered."})
    with pytest.raises(CommandError, match="1 of 1 Datanet versions do not match"):
        call_command("check_versions")
    err = capsys.readouterr().err
    assert f"{published.datanet.slug} v1: record {record.pk}: its content hashes to" in err
    assert "Merkle root of its records' content is" in err
