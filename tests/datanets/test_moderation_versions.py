"""Moderation, versions with Merkle roots, exports, access requests and the ledger."""

import hashlib
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from accounts.contributors import contributor_preference_set, contributor_pseudonym
from datanets import merkle, services
from datanets.ledger import ledger_verify
from datanets.models import AccessRequest, LedgerEntry, Record
from modelfactory.exceptions import ApplicationError
from tests.datanets.conftest import qa
from tests.factories import MembershipFactory, UserFactory


def add(datanet, contributor, *values):
    return [services.record_create(datanet=datanet, contributor=contributor, value=v) for v in values]


def test_moderation_records_who_when_why_and_refuses_own_records(datanet, curator, contributor):
    mine = add(datanet, curator, qa(100))
    theirs = add(datanet, contributor, qa(1), qa(2), qa(3))
    decided, skipped = services.records_moderate(
        records_qs=Record.objects.filter(pk__in=[theirs[0].pk, mine[0].pk]), by=curator, approve=True
    )
    assert decided == 1 and "your own" in skipped[0]
    with pytest.raises(ApplicationError, match="Say why"):
        services.records_moderate(records_qs=Record.objects.filter(pk=theirs[1].pk), by=curator, approve=False)
    services.records_moderate(
        records_qs=Record.objects.filter(pk=theirs[1].pk), by=curator, approve=False, reason="Not cardiology"
    )
    outsider = UserFactory()
    decided, skipped = services.records_moderate(
        records_qs=Record.objects.filter(pk=theirs[2].pk), by=outsider, approve=True
    )
    assert decided == 0 and "do not curate" in skipped[0]

    approved, rejected = Record.objects.get(pk=theirs[0].pk), Record.objects.get(pk=theirs[1].pk)
    assert (approved.status, approved.reviewed_by, approved.reviewed_at is not None) == ("approved", curator, True)
    assert (rejected.status, rejected.rejection_reason) == ("rejected", "Not cardiology")
    assert Record.objects.get(pk=mine[0].pk).status == "pending"
    assert list(LedgerEntry.objects.values_list("event", flat=True)) == ["record.approved", "record.rejected"]
    from datanets.models import RejectionReason

    assert RejectionReason.objects.filter(text="Not cardiology").exists()


def test_versions_freeze_records_with_merkle_root_counts_and_changelog(datanet, curator, contributor, client):
    other = UserFactory(username="galen")
    records = add(datanet, contributor, qa(1), qa(2)) + add(datanet, other, qa(3, "A much longer answer here."))
    services.records_moderate(records_qs=Record.objects.all(), by=curator, approve=True)
    v1 = services.version_publish(datanet=datanet, by=curator)
    assert (v1.number, v1.record_count) == (1, 3)
    assert v1.merkle_root == merkle.merkle_root(r.content_hash for r in records)
    by_name = {c["username"]: c for c in v1.contributors}
    assert by_name["hippocrates"]["records"] == 2 and by_name["galen"]["records"] == 1
    assert v1.token_count == sum(r.token_count for r in records)
    assert v1.changelog["added"] == 3 and v1.changelog["removed"] == 0
    with pytest.raises(ApplicationError, match="Nothing changed"):
        services.version_publish(datanet=datanet, by=curator)

    added = add(datanet, other, qa(4))
    services.records_moderate(records_qs=Record.objects.filter(pk=added[0].pk), by=curator, approve=True)
    Record.objects.filter(pk=records[0].pk).update(status="rejected")  # taken out after review
    v2 = services.version_publish(datanet=datanet, by=curator)
    assert v2.changelog["added_hashes"] == [added[0].content_hash]
    assert v2.changelog["removed_hashes"] == [records[0].content_hash]
    v1.refresh_from_db()
    assert v1.record_count == 3 and v1.records.count() == 3  # v1 never changes

    # Recompute v2's root from its export, exactly as documented in datanets/merkle.py.
    client.force_login(curator)
    response = client.get(reverse("version_export", args=[datanet.slug, 2]))
    lines = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
    digests = []
    for line in lines:
        canonical = json.dumps(line["content"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digests.append(hashlib.sha256(canonical.encode("utf-8")).hexdigest())
    assert merkle.merkle_root(digests) == v2.merkle_root
    assert {line["contributor"] for line in lines} == {
        contributor_pseudonym(contributor.pk),
        contributor_pseudonym(other.pk),
    }
    assert all("contributor_id" not in line for line in lines)  # never the internal id
    contributor_preference_set(user=other, show_handle=True)  # with consent, the handle
    again = b"".join(client.get(reverse("version_export", args=[datanet.slug, 2])).streaming_content).decode()
    assert {json.loads(line)["contributor"] for line in again.splitlines()} == {
        contributor_pseudonym(contributor.pk),
        "galen",
    }
    assert list(LedgerEntry.objects.filter(event="version.published").values_list("payload__version", flat=True)) == [
        1,
        2,
    ]


def test_permissioned_access_request_grant_and_deny(datanet, curator):
    datanet.visibility = "permissioned"
    datanet.save()
    requester = UserFactory()
    team = MembershipFactory(user=requester, role="owner").team
    from datanets import policy

    assert not policy.can_train_on(requester, datanet)
    request = services.access_request_create(datanet=datanet, team=team, by=requester, message="For a triage model")
    with pytest.raises(ApplicationError, match="pending request"):
        services.access_request_create(datanet=datanet, team=team, by=requester)
    with pytest.raises(ApplicationError, match="Only curators"):
        services.access_request_decide(request=request, by=requester, grant=True)
    services.access_request_decide(request=request, by=curator, grant=True, message="Welcome")
    assert policy.can_train_on(requester, datanet)
    assert AccessRequest.objects.get().decision_message == "Welcome"
    assert LedgerEntry.objects.get().event == "access.granted"


def test_ledger_verification_finds_the_first_broken_link(datanet, curator, contributor):
    records = add(datanet, contributor, qa(1), qa(2), qa(3))
    for record in records:
        services.records_moderate(records_qs=Record.objects.filter(pk=record.pk), by=curator, approve=True)
    assert ledger_verify()[0:2] == (3, None)
    call_command("verify_ledger")

    second = LedgerEntry.objects.get(sequence=2)
    LedgerEntry.objects.filter(pk=second.pk).update(payload={**second.payload, "contributor_id": curator.pk})
    checked, broken, why = ledger_verify()
    assert (checked, broken.sequence) == (1, 2) and "edited" in why
    with pytest.raises(CommandError, match="entry #2"):
        call_command("verify_ledger")
