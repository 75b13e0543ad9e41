"""Keeping published Datanet versions true to their records: staff edits of a record's content, and the
check that recomputes every version's Merkle root from its records.

Apart from services.py, which is already past the size the house style asks for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import orjson
from django.db import transaction

from modelfactory.exceptions import ApplicationError

from . import merkle, policy, prepare, records
from .ledger import ledger_append
from .models import Datanet, DatanetVersion, Record


def record_content_prepare(*, datanet: Datanet, value, record_id: int | None = None) -> prepare.Prepared:
    """New content validated, normalised and hashed as an ingest would, or an ApplicationError."""
    if record_id is not None and DatanetVersion.records.through.objects.filter(record_id=record_id).exists():
        raise ApplicationError("This record is in a published Datanet version: it never changes.")
    prepared = prepare.prepare_lines([records.Line(1, value=value)], str(datanet.schema))
    if prepared.errors:
        raise ApplicationError(f"This record is not valid: {prepared.errors[0][1]}.")
    same = Record.objects.filter(datanet=datanet, content_hash=prepared.hashes[0]).exclude(pk=record_id)
    if same.exists():
        raise ApplicationError("This exact record is already in the Datanet.")
    return prepared


def record_content_change(*, record: Record, value, by) -> Record:
    """Replace a record's content (staff, never in a published version): hash, tokens and personal-data
    flags are recomputed, and the ledger says who changed which hash into which."""
    if not policy.can_edit_record_content(by, record):
        raise ApplicationError("Only staff change a record's content, and never in a published version.")
    with transaction.atomic():
        record = Record.objects.select_for_update().select_related("datanet").get(pk=record.pk)
        prepared = record_content_prepare(datanet=record.datanet, value=value, record_id=record.pk)
        before = record.content_hash
        found = prepared.flags[0]
        kept = [flag for flag in record.flags if flag.get("kind") == "near_duplicate"]  # only the ingest finds these
        record.content = orjson.loads(prepared.contents[0])
        record.content_hash, record.token_count = prepared.hashes[0], prepared.tokens[0]
        record.flags = [*found, *kept]
        record.flag_kinds = ",".join(sorted({flag["kind"] for flag in record.flags}))
        record.save(update_fields=["content", "content_hash", "token_count", "flags", "flag_kinds"])
        if before != record.content_hash:
            ledger_append(
                event="record.edited",
                payload={
                    "datanet": record.datanet.slug,
                    "record_id": record.pk,
                    "content_hash_before": before,
                    "content_hash": record.content_hash,
                },
                actor=by,
            )
    return record


def version_mismatches(version: DatanetVersion) -> Iterator[str]:
    """What no longer matches in one version: records whose content is not their hash, and the root."""
    stored, recomputed = [], []
    rows = version.records.order_by("id").values_list("id", "content_hash", "content")
    for record_id, content_hash, content in rows.iterator(chunk_size=2000):
        digest = hashlib.sha256(records.canonical_bytes(content)).hexdigest()
        if digest != content_hash:
            yield f"record {record_id}: its content hashes to {digest}, not its stored {content_hash}"
        stored.append(content_hash)
        recomputed.append(digest)
    if len(recomputed) != version.record_count:
        yield f"{len(recomputed)} records where the version counted {version.record_count}"
    root = merkle.merkle_root(recomputed)
    if root != version.merkle_root:
        yield f"Merkle root of its records' content is {root}, not the published {version.merkle_root}"
    elif merkle.merkle_root(stored) != version.merkle_root:
        yield "Merkle root of its records' stored hashes does not match the published one"


def versions_check() -> Iterator[tuple[DatanetVersion, list[str]]]:
    """Every version with its mismatches (an empty list when it is intact)."""
    for version in DatanetVersion.objects.select_related("datanet").order_by("datanet__slug", "number"):
        yield version, list(version_mismatches(version))
