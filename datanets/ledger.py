"""The append-only, hash-chained ledger of events that matter for attribution.

Entry hash = SHA-256 of (prev_hash + "\\n" + canonical JSON of {sequence, event, payload, actor_id,
created_at}), where the first entry's prev_hash is 64 zeros. Changing, removing or reordering any
entry breaks every link after it.
"""

import hashlib
import json

from django.db import transaction
from django.utils import timezone

from .models import LedgerEntry

GENESIS = "0" * 64


def entry_hash(*, prev_hash: str, sequence: int, event: str, payload: dict, actor_id, created_at: str) -> str:
    body = json.dumps(
        {"sequence": sequence, "event": event, "payload": payload, "actor_id": actor_id, "created_at": created_at},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def ledger_append(*, event: str, payload: dict, actor=None) -> LedgerEntry:
    with transaction.atomic():
        last = LedgerEntry.objects.select_for_update().order_by("-sequence").first()
        sequence = (last.sequence + 1) if last else 1
        prev_hash = last.hash if last else GENESIS
        created_at = timezone.now()
        actor_id = actor.pk if actor is not None else None
        digest = entry_hash(
            prev_hash=prev_hash,
            sequence=sequence,
            event=event,
            payload=payload,
            actor_id=actor_id,
            created_at=created_at.isoformat(),
        )
        return LedgerEntry.objects.create(
            sequence=sequence,
            event=event,
            payload=payload,
            actor_id=actor_id,
            created_at=created_at,
            prev_hash=prev_hash,
            hash=digest,
        )


def ledger_verify() -> tuple[int, LedgerEntry | None, str]:
    """Walk the chain; return (entries checked, first broken entry or None, what is wrong)."""
    prev_hash, expected_sequence, checked = GENESIS, 1, 0
    for entry in LedgerEntry.objects.order_by("sequence").iterator(chunk_size=2000):
        if entry.sequence != expected_sequence:
            return checked, entry, f"sequence {entry.sequence} where {expected_sequence} was expected (a gap)"
        if entry.prev_hash != prev_hash:
            return checked, entry, "its prev_hash does not match the previous entry's hash"
        recomputed = entry_hash(
            prev_hash=entry.prev_hash,
            sequence=entry.sequence,
            event=entry.event,
            payload=entry.payload,
            actor_id=entry.actor_id,
            created_at=entry.created_at.isoformat(),
        )
        if recomputed != entry.hash:
            return checked, entry, "its content does not match its hash (edited after it was written)"
        prev_hash, expected_sequence, checked = entry.hash, expected_sequence + 1, checked + 1
    return checked, None, ""
