"""Datanet use cases: create, contribute (upload or form), ingest, moderate, version, grant access."""

from __future__ import annotations

from collections import defaultdict
from contextlib import suppress
from pathlib import Path

import orjson
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify
from redis.exceptions import RedisError

from accounts import policy as team_policy
from accounts.contributors import contributor_labels
from modelfactory.exceptions import ApplicationError

from . import merkle, policy, prepare, records
from .ingest import pipeline, rowstore
from .ledger import ledger_append
from .models import AccessRequest, Datanet, DatanetVersion, Record, RecordBand, RejectionReason, Upload


def datanet_create(*, by, team, name: str, **fields) -> Datanet:
    if not team_policy.can_manage_team(by, team):
        raise ApplicationError("Only the team's owners and admins create Datanets for it.")
    base = slugify(name)
    if not base:
        raise ApplicationError("A Datanet name needs at least one letter or digit.")
    slug, n = base, 1
    while Datanet.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    curators = fields.pop("curators", [])
    datanet = Datanet.objects.create(name=name.strip(), slug=slug, team=team, created_by=by, **fields)
    if curators:
        datanet.curators.set(curators)
    return datanet


# Contributing ---------------------------------------------------------------------------------


def upload_create(*, datanet: Datanet, contributor, file) -> Upload:
    """Store the file and queue its ingest. The file is streamed to storage in chunks, never read whole."""
    if not policy.can_contribute(contributor, datanet):
        raise ApplicationError("You may not contribute to this Datanet.")
    try:
        fmt = records.detect_format(file.name)
    except records.FileError as error:
        raise ApplicationError(str(error)) from error
    if file.size > settings.MAX_UPLOAD_BYTES:
        raise ApplicationError(
            f"{file.name} is {file.size:,} bytes; the upload limit is {settings.MAX_UPLOAD_BYTES:,} bytes. "
            "Split it into smaller files."
        )
    if file.size == 0:
        raise ApplicationError(f"{file.name} is empty: it holds no records.")
    upload = Upload(
        datanet=datanet, contributor=contributor, filename=Path(file.name).name[:255], format=fmt, size_bytes=file.size
    )
    upload.file.save(Path(file.name).name, file, save=False)
    upload.save()
    from .tasks import upload_ingest_task

    upload_ingest_task.delay_on_commit(upload.pk)
    return upload


def upload_live(upload: Upload) -> dict:
    """Progress of a running ingest. It runs inside one database transaction, so its progress goes
    through the cache (Redis), where the web process can read it before the commit."""
    live = {"lines_read": upload.lines_read, "percent": upload.percent}
    if not upload.finished:
        with suppress(RedisError):  # the cache is down: the page shows what the row says
            live.update(cache.get(pipeline.live_key(upload.pk)) or {})
    return live


def upload_cancel(*, upload: Upload, by) -> Upload:
    if upload.contributor_id != by.pk and not policy.can_curate_datanet(by, upload.datanet):
        raise ApplicationError("Only the contributor or a curator cancels an upload.")
    if upload.finished:
        raise ApplicationError("This upload has already finished.")
    # Through the cache, not the row: the ingest's transaction may hold SQLite's write lock.
    cache.set(pipeline.cancel_key(upload.pk), True, timeout=24 * 3600)
    return upload


def _finish(upload: Upload, status: str, message: str, **fields) -> Upload:
    with suppress(RedisError):  # the outcome goes to the row even while the cache is down
        cache.delete_many([pipeline.live_key(upload.pk), pipeline.cancel_key(upload.pk)])
    upload.status = status
    upload.message = message
    upload.finished_at = timezone.now()
    for name, value in fields.items():
        setattr(upload, name, value)
    upload.save()
    if status != Upload.Status.DONE and upload.file:
        upload.file.delete(save=False)  # a rejected, failed or cancelled upload leaves nothing behind
        Upload.objects.filter(pk=upload.pk).update(file="")
    return upload


def upload_ingest(*, upload: Upload) -> Upload:
    """Read, validate, normalise, hash, dedupe, flag and store every record in one transaction.

    One pass over the file. The first bad line stops storing, but reading goes on so that every bad
    line is reported with its number; then the transaction rolls back and nothing is stored. Exact
    duplicates (within the file or already in the Datanet) are skipped. Safe to run twice: a
    finished upload is left alone.
    """
    if upload.finished:
        return upload
    try:
        with pipeline.local_copy(upload) as path:
            records.sniff(path, upload.format)
            total = pipeline.count_lines(path, upload.format)
            upload.status = Upload.Status.VALIDATING
            upload.save(update_fields=["status"])
            pipeline.progress(upload, lines_read=0, percent=0)
            with transaction.atomic():
                stats = pipeline.ingest(upload, path, total)
    except pipeline.Rejected:
        return _finish(
            upload,
            Upload.Status.REJECTED,
            f"{upload.error_count:,} of {upload.lines_read:,} records were rejected, so nothing was stored. "
            "Fix the lines listed below and upload the file again.",
        )
    except pipeline.Cancelled:
        return _finish(upload, Upload.Status.CANCELLED, "Cancelled; nothing was stored.")
    except records.FileError as error:
        return _finish(
            upload,
            Upload.Status.REJECTED,
            f"{error} Nothing was stored.",
            errors=[{"line": 0, "reason": str(error)}],
            error_count=1,
        )
    except Exception as error:
        _finish(upload, Upload.Status.FAILED, f"Ingest failed ({type(error).__name__}); nothing was stored.")
        raise
    added, duplicates, flagged = stats
    return _finish(
        upload,
        Upload.Status.DONE,
        f"{added:,} records added for review, {duplicates:,} exact duplicates skipped, {flagged:,} flagged.",
        records_added=added,
        duplicates=duplicates,
        flagged=flagged,
    )


def record_create(*, datanet: Datanet, contributor, value: dict) -> Record:
    """One record from the form: validated and flagged like an uploaded one."""
    if not policy.can_contribute(contributor, datanet):
        raise ApplicationError("You may not contribute to this Datanet.")
    prepared = prepare.prepare_lines([records.Line(1, value=value)], str(datanet.schema))
    if prepared.errors:
        raise ApplicationError(f"This record is not valid: {prepared.errors[0][1]}.")
    if Record.objects.filter(datanet=datanet, content_hash=prepared.hashes[0]).exists():
        raise ApplicationError("This exact record is already in the Datanet.")
    matches = rowstore.band_matches(datanet, prepared.keys[0])
    record_flags = [*prepared.flags[0], rowstore.NEAR_DUPLICATE] if matches else prepared.flags[0]
    with transaction.atomic():
        created = Record.objects.create(
            datanet=datanet,
            contributor=contributor,
            content=orjson.loads(prepared.contents[0]),
            content_hash=prepared.hashes[0],
            token_count=prepared.tokens[0],
            flags=record_flags,
            flag_kinds=rowstore.flag_kinds(record_flags),
            near_duplicate_of_id=min(matches.values()) if matches else None,
        )
        RecordBand.objects.bulk_create(
            RecordBand(datanet=datanet, record=created, key=key) for key in prepared.keys[0].tolist()
        )
    return created


def record_withdraw(*, record: Record, by) -> Record:
    if record.contributor_id != by.pk:
        raise ApplicationError("Only the contributor withdraws a record.")
    if record.status != Record.Status.PENDING:
        raise ApplicationError("Only records still pending review can be withdrawn.")
    record.status = Record.Status.WITHDRAWN
    record.save(update_fields=["status"])
    return record


# Moderation -----------------------------------------------------------------------------------


def records_moderate(*, records_qs, by, approve: bool, reason: str = "") -> tuple[int, list[str]]:
    """Approve or reject pending records; returns (how many decided, why the others were skipped)."""
    reason = reason.strip()
    if not approve and not reason:
        raise ApplicationError("Say why the records are rejected: pick a reason or write one.")
    decided, skipped, teams = 0, [], set()
    now = timezone.now()
    with transaction.atomic():
        # Locked by primary key: the caller's queryset may carry outer joins (a moderation queue's
        # select_related), which PostgreSQL refuses to lock.
        locked = Record.objects.filter(pk__in=records_qs.values("pk"))
        for record in locked.select_related("datanet").select_for_update(of=("self",)):
            if record.status != Record.Status.PENDING:
                skipped.append(f"record {record.pk} is already {record.get_status_display().lower()}")
                continue
            if record.contributor_id == by.pk:
                skipped.append(f"record {record.pk} is your own: another curator must review it")
                continue
            if not policy.can_moderate_record(by, record):
                skipped.append(f"record {record.pk}: you do not curate {record.datanet.name}")
                continue
            teams.add(record.datanet.team_id)
            record.status = Record.Status.APPROVED if approve else Record.Status.REJECTED
            record.reviewed_by, record.reviewed_at = by, now
            record.rejection_reason = "" if approve else reason
            record.save(update_fields=["status", "reviewed_by", "reviewed_at", "rejection_reason"])
            ledger_append(
                event="record.approved" if approve else "record.rejected",
                payload={
                    "datanet": record.datanet.slug,
                    "record_id": record.pk,
                    "content_hash": record.content_hash,
                    "contributor_id": record.contributor_id,
                    **({} if approve else {"reason": reason}),
                },
                actor=by,
            )
            decided += 1
        for team_id in set() if approve else teams:  # saved for the teams whose records it rejected
            RejectionReason.objects.get_or_create(team_id=team_id, text=reason[:300])
    return decided, skipped


def records_approve_matching(*, queue, by, expected: int) -> tuple[int, list[str]]:
    """Approve every pending record of a moderation filter, once the curator has confirmed how many:
    if the queue changed since they saw the count, nothing is decided and they are asked again."""
    pending = queue.filter(status=Record.Status.PENDING).exclude(contributor=by)
    found = pending.count()
    if found != expected:
        raise ApplicationError(f"The queue changed: {found} records match now, not {expected}. Confirm again.")
    return records_moderate(records_qs=pending, by=by, approve=True)


# Versions -------------------------------------------------------------------------------------


def version_publish(*, datanet: Datanet, by, notes: str = "") -> DatanetVersion:
    """Freeze the approved records now: Merkle root, per-contributor counts, changelog."""
    if not policy.can_curate_datanet(by, datanet):
        raise ApplicationError("Only curators publish versions of this Datanet.")
    with transaction.atomic():
        rows = list(
            Record.objects.filter(datanet=datanet, status=Record.Status.APPROVED)
            .select_related("contributor")
            .values_list("id", "content_hash", "contributor_id", "contributor__username", "token_count")
        )
        if not rows:
            raise ApplicationError("There are no approved records to publish yet.")
        previous = datanet.versions.order_by("-number").first()
        hashes = {row[1] for row in rows}
        before = set(previous.records.values_list("content_hash", flat=True)) if previous else set()
        if previous and hashes == before:
            raise ApplicationError(f"Nothing changed since version {previous.number}.")
        per_contributor: dict[int, dict] = defaultdict(lambda: {"records": 0, "tokens": 0})
        for _, _, contributor_id, username, tokens in rows:
            entry = per_contributor[contributor_id]
            entry.update(contributor_id=contributor_id, username=username)
            entry["records"] += 1
            entry["tokens"] += tokens
        added, removed = sorted(hashes - before), sorted(before - hashes)
        version = DatanetVersion.objects.create(
            datanet=datanet,
            number=(previous.number + 1) if previous else 1,
            merkle_root=merkle.merkle_root(hashes),
            record_count=len(rows),
            token_count=sum(row[4] for row in rows),
            contributors=sorted(per_contributor.values(), key=lambda c: -c["tokens"]),
            changelog={"added": len(added), "removed": len(removed), "added_hashes": added, "removed_hashes": removed},
            license=datanet.license,
            notes=notes,
            published_by=by,
        )
        through = DatanetVersion.records.through
        through.objects.bulk_create(
            [through(datanetversion_id=version.pk, record_id=row[0]) for row in rows], batch_size=5000
        )
        ledger_append(
            event="version.published",
            payload={
                "datanet": datanet.slug,
                "version": version.number,
                "merkle_root": version.merkle_root,
                "records": version.record_count,
            },
            actor=by,
        )
    return version


def version_export_public_lines(version: DatanetVersion):
    """The version's JSONL export for people: {content_hash, contributor, content}, ordered by content hash;
    the contributor named as in manifests (pseudonym, or handle where they opted in), never by internal id."""
    labels = contributor_labels([c["contributor_id"] for c in version.contributors])
    rows = version.records.order_by("content_hash").values_list("content_hash", "contributor_id", "content")
    for content_hash, contributor_id, content in rows.iterator(chunk_size=2000):
        line = {"content_hash": content_hash, "contributor": labels[contributor_id], "content": content}
        yield records.canonical_json(line) + "\n"


def version_export_lines(version: DatanetVersion):
    """JSONL lines of a version for the trainer, ordered by content hash: {content_hash, contributor_id,
    content}. Internal ids: never served to people (``version_export_public_lines``)."""
    rows = version.records.order_by("content_hash").values_list("content_hash", "contributor_id", "content")
    for content_hash, contributor_id, content in rows.iterator(chunk_size=2000):
        line = {"content_hash": content_hash, "contributor_id": contributor_id, "content": content}
        yield records.canonical_json(line) + "\n"


# Access ---------------------------------------------------------------------------------------


def access_request_create(*, datanet: Datanet, team, by, message: str = "") -> AccessRequest:
    if datanet.visibility != Datanet.Visibility.PERMISSIONED:
        raise ApplicationError("Only permissioned Datanets take access requests.")
    if not team_policy.can_view_team(by, team):
        raise ApplicationError("You can only request access for a team you belong to.")
    if AccessRequest.objects.filter(datanet=datanet, team=team, status=AccessRequest.Status.GRANTED).exists():
        raise ApplicationError(f"{team.name} already has access.")
    if AccessRequest.objects.filter(datanet=datanet, team=team, status=AccessRequest.Status.PENDING).exists():
        raise ApplicationError(f"{team.name} already has a pending request.")
    return AccessRequest.objects.create(datanet=datanet, team=team, requested_by=by, message=message.strip())


def access_request_decide(*, request: AccessRequest, by, grant: bool, message: str = "") -> AccessRequest:
    if not policy.can_curate_datanet(by, request.datanet):
        raise ApplicationError("Only curators decide access requests.")
    if request.status != AccessRequest.Status.PENDING:
        raise ApplicationError("This request has already been decided.")
    with transaction.atomic():
        request.status = AccessRequest.Status.GRANTED if grant else AccessRequest.Status.DENIED
        request.decided_by, request.decided_at = by, timezone.now()
        request.decision_message = message.strip()
        request.save(update_fields=["status", "decided_by", "decided_at", "decision_message"])
        ledger_append(
            event="access.granted" if grant else "access.denied",
            payload={"datanet": request.datanet.slug, "team": request.team.slug, "request_id": request.pk},
            actor=by,
        )
    return request


def csv_safe(value) -> str:
    """Neutralise spreadsheet formulas in exported cells (CSV injection)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
