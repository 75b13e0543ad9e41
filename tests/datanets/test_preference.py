"""Preference Datanets: uploads of {prompt or messages, chosen, rejected} go the way every schema goes."""

import hashlib
import json

from django.urls import reverse

from datanets import ledger, merkle, services
from datanets.models import LedgerEntry, Record, Upload
from tests.datanets.conftest import jsonl_file
from tests.factories import DatanetFactory, MembershipFactory
from tests.waiting import wait_until


def pair(i, chosen=None):
    return {
        "prompt": f"Name colour number {i}.",
        "chosen": chosen or f"Colour {i} is teal.",
        "rejected": f"Colour {i} is red.",
    }


def ingest_on_worker(datanet, contributor, rows, capture):
    with capture(execute=True):
        upload = services.upload_create(datanet=datanet, contributor=contributor, file=jsonl_file(rows))
    return wait_until(lambda: Upload.objects.get(pk=upload.pk), lambda u: u.finished, timeout=60)


def test_a_preference_upload_is_validated_hashed_deduplicated_flagged_moderated_and_versioned(
    celery_worker_process, curator, contributor, client, django_capture_on_commit_callbacks
):
    datanet = DatanetFactory(name="Colours", slug="colours", schema="preference")
    MembershipFactory(team=datanet.team, user=curator, role="admin")
    chat = {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Colour 9?"}],
        "chosen": "Teal.",
        "rejected": "Red.",
    }
    bad = [
        pair(1),
        {"prompt": "Same?", "chosen": "Yes", "rejected": " Yes "},
        "{broken",
        {"prompt": "Only one answer", "chosen": "A"},
        {**chat, "prompt": "both"},
        {
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
            "chosen": "a",
            "rejected": "b",
        },
    ]
    rejected = ingest_on_worker(datanet, contributor, bad, django_capture_on_commit_callbacks)
    assert rejected.status == Upload.Status.REJECTED and Record.objects.count() == 0
    reasons = {e["line"]: e["reason"] for e in rejected.errors}
    assert sorted(reasons) == [2, 3, 4, 5, 6]
    assert "the same answer" in reasons[2] and "'rejected' is missing" in reasons[4]
    assert "either 'prompt' or 'messages'" in reasons[5] and "end with the user turn" in reasons[6]

    rows = [pair(i) for i in range(1, 5)] + [pair(2), pair(5, "Write to jane.doe@example.org"), chat]
    done = ingest_on_worker(datanet, contributor, rows, django_capture_on_commit_callbacks)
    assert done.status == Upload.Status.DONE, done.message
    assert (done.records_added, done.duplicates, done.flagged) == (6, 1, 1)
    record = Record.objects.get(line_number=1)
    canonical = json.dumps(pair(1), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert record.content == pair(1) and record.content_hash == hashlib.sha256(canonical.encode()).hexdigest()

    client.force_login(curator)
    page = client.get(reverse("moderation"), {"datanet": datanet.slug}).content.decode()
    assert page.count('class="preference-sides"') == 6  # both answers side by side
    flagged = page.split(f'id="record-{Record.objects.get(line_number=6).pk}"')[1].split("</article>")[0]
    chosen, rejected_side = flagged.split('class="preference-chosen"')[1].split('class="preference-rejected"')
    assert '<mark class="flag-email" title="email">jane.doe@example.org</mark>' in chosen
    assert "Colour 5 is red." in rejected_side
    services.records_moderate(records_qs=Record.objects.all(), by=curator, approve=True)
    version = services.version_publish(datanet=datanet, by=curator)
    assert version.record_count == 6
    export = client.get(reverse("version_export", args=[datanet.slug, 1]))
    lines = [json.loads(line) for line in b"".join(export.streaming_content).decode().splitlines()]
    digests = [
        hashlib.sha256(
            json.dumps(line["content"], sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        ).hexdigest()
        for line in lines
    ]
    assert merkle.merkle_root(digests) == version.merkle_root
    assert {"chosen", "rejected"} <= set(lines[0]["content"])
    assert list(LedgerEntry.objects.values_list("event", flat=True)).count("record.approved") == 6
    assert ledger.ledger_verify()[1] is None


def test_one_preference_pair_through_the_contribute_form(curator, contributor, client):
    datanet = DatanetFactory(name="Colours", slug="colours", schema="preference", visibility="public")
    client.force_login(contributor)
    url = reverse("datanet_contribute", args=[datanet.slug])
    assert 'name="chosen"' in client.get(url).content.decode()
    client.post(url, {"prompt": "Colour 1?", "chosen": "Teal.", "rejected": "Red.", "kind": "record"})
    assert Record.objects.get(datanet=datanet).content == {"prompt": "Colour 1?", "chosen": "Teal.", "rejected": "Red."}
