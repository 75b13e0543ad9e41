"""Datanet use cases: create, contribute (upload or form), ingest, moderate, version, grant access."""

from __future__ import annotations

import logging
import multiprocessing
import signal
import sqlite3
import sys
import tempfile
from collections import defaultdict, deque
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing, contextmanager, suppress
from itertools import chain, islice
from pathlib import Path

import numpy as np
import orjson
from django.conf import settings
from django.core.cache import cache
from django.db import connection, models, transaction
from django.utils import timezone
from django.utils.text import slugify
from redis.exceptions import RedisError

from accounts import policy as team_policy
from accounts.contributors import contributor_labels
from modelfactory.exceptions import ApplicationError

from . import flags, merkle, policy, prepare, records
from .ledger import ledger_append
from .models import AccessRequest, Datanet, DatanetVersion, Record, RecordBand, RejectionReason, Upload

logger = logging.getLogger(__name__)
MAX_REPORTED_ERRORS = 1000
CHUNK = 2048  # lines prepared (by a worker process for big files) and stored at once
BAND_BATCH = 20_000  # stored records whose band keys are matched and stored at once
STATEMENT_ROWS = 2048  # rows a SQLite INSERT statement holds at most
ARRAY_ROWS = 16_384  # rows a PostgreSQL INSERT statement holds at most


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


def _live_key(upload_id: int) -> str:
    return f"upload:{upload_id}:live"


def _cancel_key(upload_id: int) -> str:
    return f"upload:{upload_id}:cancel"


def upload_live(upload: Upload) -> dict:
    """Progress of a running ingest. It runs inside one database transaction, so its progress goes
    through the cache (Redis), where the web process can read it before the commit."""
    live = {"lines_read": upload.lines_read, "percent": upload.percent}
    if not upload.finished:
        with suppress(RedisError):  # the cache is down: the page shows what the row says
            live.update(cache.get(_live_key(upload.pk)) or {})
    return live


def upload_cancel(*, upload: Upload, by) -> Upload:
    if upload.contributor_id != by.pk and not policy.can_curate_datanet(by, upload.datanet):
        raise ApplicationError("Only the contributor or a curator cancels an upload.")
    if upload.finished:
        raise ApplicationError("This upload has already finished.")
    # Through the cache, not the row: the ingest's transaction may hold SQLite's write lock.
    cache.set(_cancel_key(upload.pk), True, timeout=24 * 3600)
    return upload


class Cancelled(Exception):
    pass


@contextmanager
def local_copy(upload: Upload):
    """A local path for the stored file: the file itself on local storage, a streamed copy otherwise."""
    try:
        yield Path(upload.file.path)
        return
    except NotImplementedError:
        pass
    with tempfile.NamedTemporaryFile(suffix=f".{upload.format}") as handle:
        with upload.file.open("rb") as source:
            for chunk in source.chunks():
                handle.write(chunk)
        handle.flush()
        yield Path(handle.name)


def count_lines(path: Path, fmt: str) -> int:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    total = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            total += chunk.count(b"\n")
    return max(total, 1)


def _progress(upload: Upload, *, lines_read: int, percent: int) -> None:
    """Publish progress for the upload page and stop if someone asked to cancel."""
    try:
        cache.set(_live_key(upload.pk), {"lines_read": lines_read, "percent": percent}, timeout=24 * 3600)
        cancel = cache.get(_cancel_key(upload.pk))
    except RedisError:  # progress is for the page: a cache that is down does not stop the ingest
        return
    if cancel:
        upload.cancel_requested = True
        raise Cancelled


def _finish(upload: Upload, status: str, message: str, **fields) -> Upload:
    with suppress(RedisError):  # the outcome goes to the row even while the cache is down
        cache.delete_many([_live_key(upload.pk), _cancel_key(upload.pk)])
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


class Rejected(Exception):
    """Some lines are bad: the transaction rolls back and the upload reports them."""


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
        with local_copy(upload) as path:
            records.sniff(path, upload.format)
            total = count_lines(path, upload.format)
            upload.status = Upload.Status.VALIDATING
            upload.save(update_fields=["status"])
            _progress(upload, lines_read=0, percent=0)
            with transaction.atomic():
                stats = _ingest(upload, path, total)
    except Rejected:
        return _finish(
            upload,
            Upload.Status.REJECTED,
            f"{upload.error_count:,} of {upload.lines_read:,} records were rejected, so nothing was stored. "
            "Fix the lines listed below and upload the file again.",
        )
    except Cancelled:
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


def _json_integers(integers: np.ndarray) -> str:
    """'[1,2,3]', written by orjson straight from the array."""
    return orjson.dumps(np.ascontiguousarray(integers, dtype=np.int64), option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _pg_integers(integers: np.ndarray) -> str:
    """'{1,2,3}': a PostgreSQL array literal, which the server parses faster than psycopg adapts ints."""
    return "{" + _json_integers(integers)[1:-1] + "}"


def _band_matches(datanet: Datanet, keys: np.ndarray) -> dict[int, int]:
    """For each band key some record of the Datanet has (withdrawn records aside): the earliest such record's id."""
    if not len(keys):
        return {}
    band, record = (connection.ops.quote_name(model._meta.db_table) for model in (RecordBand, Record))
    # One text parameter, whatever the number of keys: an array literal, or a JSON array for SQLite's JSON1.
    if connection.vendor == "postgresql":
        wanted, param = "= ANY(%s::bigint[])", _pg_integers(keys)
    else:
        wanted, param = "IN (SELECT value FROM json_each(%s))", _json_integers(keys)
    sql = (
        f"SELECT b.key, MIN(b.record_id) FROM {band} b JOIN {record} r ON r.id = b.record_id "
        f"WHERE b.datanet_id = %s AND b.key {wanted} AND r.status <> %s GROUP BY b.key"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [datanet.pk, param, Record.Status.WITHDRAWN])
        return dict(cursor.fetchall())


INSERT_FIELDS = (
    "datanet",
    "contributor",
    "upload",
    "line_number",
    "content",
    "content_hash",
    "token_count",
    "flags",
    "flag_kinds",
    "near_duplicate_of",
    "status",
    "rejection_reason",
    "created_at",
)
NEAR_DUPLICATE = {"kind": "near_duplicate", "start": 0, "end": 0}
NO_RECORD = np.iinfo(np.int64).max  # above every record id: "none" where the earliest is a minimum


def _insert_values(model, fields: tuple[str, ...], params: list | np.ndarray, suffix: str = "") -> list[tuple]:
    """INSERT rows, given as one flat list (or integer array) of values (row after row, each in
    ``fields`` order, JSON already serialised), and return what a RETURNING ``suffix`` returned.

    Row by row (executemany) the drivers' own work per row cost more than the inserts (3 us a row on
    SQLite, 23 on PostgreSQL), and the ORM's per-field compilation more again. So SQLite takes
    multi-row VALUES, up to STATEMENT_ROWS rows a statement, and PostgreSQL one array per column,
    unnested (6 us a row). The statements go to the driver directly: Django's cursor rewrites
    every ``%s`` with a regular expression on SQLite, and quotes every value in Python on PostgreSQL.
    """
    meta, quote = model._meta, connection.ops.quote_name
    columns = [meta.get_field(name) for name in fields]
    names = ", ".join(quote(f.column) for f in columns)
    width, returned = len(fields), []
    connection.ensure_connection()
    if connection.vendor == "postgresql":
        import psycopg

        arrays = ", ".join(
            "%s::text[]" if isinstance(f, models.JSONField) else f"%s::{f.db_type(connection)}[]" for f in columns
        )
        values = ", ".join(
            f"v{i}::jsonb" if isinstance(f, models.JSONField) else f"v{i}" for i, f in enumerate(columns)
        )
        aliases = ", ".join(f"v{i}" for i in range(width))
        sql = f"INSERT INTO {quote(meta.db_table)} ({names}) SELECT {values} FROM unnest({arrays}) AS u({aliases})"
        with psycopg.Cursor(connection.connection) as cursor:
            for start in range(0, len(params), ARRAY_ROWS * width):  # a bounded slice: memory stays flat
                part = params[start : start + ARRAY_ROWS * width]
                if isinstance(part, np.ndarray):  # integers
                    by_column = [_pg_integers(part[i::width]) for i in range(width)]
                else:
                    by_column = [part[i::width] for i in range(width)]
                cursor.execute(sql + suffix, by_column)
                if suffix:
                    returned += cursor.fetchall()
        return returned
    # Statements of a power of two rows each, at most STATEMENT_ROWS: each size is compiled once and then
    # reused from the driver's statement cache, and no statement's compiled program grows big.
    most = min(STATEMENT_ROWS, connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width)
    head, one = f"INSERT INTO {quote(meta.db_table)} ({names}) VALUES ", "(" + ", ".join("?" * width) + ")"
    start, left = 0, len(params) // width
    with closing(connection.connection.cursor()) as cursor:
        while left:
            rows = 1 << (min(left, most).bit_length() - 1)
            part = params[start : start + rows * width]
            cursor.execute(
                head + ", ".join([one] * rows) + suffix, part.tolist() if isinstance(part, np.ndarray) else part
            )
            if suffix:
                returned += cursor.fetchall()
            start, left = start + rows * width, left - rows
    return returned


def _kinds(record_flags: list[dict]) -> str:
    return ",".join(sorted({flag["kind"] for flag in record_flags}))


def _earliest_sharing(
    ranked: np.ndarray, owners: np.ndarray, new_key: np.ndarray, stored: dict[int, int]
) -> np.ndarray:
    """For band keys sorted by key, then by their records' ids (``owners``; ``new_key`` marks where a
    key's run begins): the earliest other record that has each key, stored before (``stored``: key ->
    earliest id) or one of ``owners`` with a lower id; NO_RECORD for none."""
    first = owners[np.maximum.accumulate(np.where(new_key, np.arange(len(ranked)), 0))]
    earliest = np.where(first < owners, first, NO_RECORD)
    if stored:
        known = np.array(sorted(stored), dtype=np.int64)
        known_ids = np.array([stored[key] for key in known.tolist()], dtype=np.int64)
        at = np.minimum(np.searchsorted(known, ranked), len(known) - 1)
        earliest = np.minimum(earliest, np.where(known[at] == ranked, known_ids[at], NO_RECORD))
    return earliest


class _Store:
    """Stores prepared chunks of one upload: records a chunk at a time, and their band keys every
    BAND_BATCH stored records, when the near-duplicates among them (and of records stored before) are
    linked. Band keys go into a b-tree keyed at random, which costs less the more of them arrive at
    once, in key order. Nothing about a record stays in memory once its batch is done, so memory does
    not grow with the file."""

    def __init__(self, upload: Upload):
        self.upload = upload
        self.datanet = upload.datanet
        self.added = self.duplicates = self.flagged = 0
        self.now = Record._meta.get_field("created_at").get_db_prep_save(timezone.now(), connection)
        # The stored records whose band keys wait for the next flush: ids, keys and personal-data flags.
        self.ids: list[np.ndarray] = []
        self.keys: list[np.ndarray] = []
        self.found: list[list[dict]] = []

    def __call__(self, chunk: prepare.Prepared) -> None:
        if not chunk.numbers:
            return
        dumps, pending = orjson.dumps, Record.Status.PENDING
        fixed = (self.datanet.pk, self.upload.contributor_id, self.upload.pk)
        rows = [
            (
                *fixed,
                number,
                content,
                content_hash,
                tokens,
                dumps(found).decode() if found else "[]",
                _kinds(found) if found else "",
                None,
                pending,
                "",
                self.now,
            )
            for number, content, content_hash, tokens, found in zip(
                chunk.numbers, chunk.contents, chunk.hashes, chunk.tokens, chunk.flags, strict=True
            )
        ]
        # Exact duplicates (of a stored record, or of one earlier in the chunk) are skipped by the unique
        # constraint: the insert probes that index anyway, so a lookup first would do it twice.
        returning = " ON CONFLICT DO NOTHING RETURNING line_number, id"
        ids = dict(_insert_values(Record, INSERT_FIELDS, list(chain.from_iterable(rows)), returning))
        record_ids = np.array([ids.get(number, 0) for number in chunk.numbers], dtype=np.int64)
        stored = record_ids > 0
        self.added += len(ids)
        self.duplicates += len(rows) - len(ids)
        self.ids.append(record_ids[stored])
        self.keys.append(chunk.keys[stored])
        self.found += [found for found, kept in zip(chunk.flags, stored.tolist(), strict=True) if kept]
        if len(self.found) >= BAND_BATCH:
            self.flush()

    def flush(self) -> None:
        """Link the waiting records to the earliest record they share a band key with (withdrawn records
        aside), flag them, and store their band keys."""
        if not self.found:
            return
        ids, keys, waiting = np.concatenate(self.ids), np.concatenate(self.keys), self.found
        self.ids, self.keys, self.found = [], [], []
        # One sort serves the lookup (each key once), the matching (runs of a key) and the insert (key order).
        flat, owner = keys.ravel(), np.repeat(ids, flags.BANDS)
        order = np.lexsort((owner, flat))  # by key, then id
        ranked, owners = flat[order], owner[order]
        new_key = np.ones(len(ranked), dtype=bool)
        new_key[1:] = ranked[1:] != ranked[:-1]
        earliest = np.empty_like(ranked)
        earliest[order] = _earliest_sharing(ranked, owners, new_key, _band_matches(self.datanet, ranked[new_key]))
        nearest = earliest.reshape(len(ids), flags.BANDS).min(axis=1)
        nearest[nearest == NO_RECORD] = 0
        bands = np.column_stack((np.full(len(ranked), self.datanet.pk, dtype=np.int64), ranked, owners))
        _insert_values(RecordBand, ("datanet", "key", "record"), bands.ravel())
        links = []
        for at in np.flatnonzero(nearest).tolist():
            found = [*waiting[at], NEAR_DUPLICATE]
            links.append((orjson.dumps(found).decode(), _kinds(found), int(nearest[at]), int(ids[at])))
        if links:
            table = connection.ops.quote_name(Record._meta.db_table)
            with connection.cursor() as cursor:
                cursor.executemany(
                    f"UPDATE {table} SET flags = %s, flag_kinds = %s, near_duplicate_of_id = %s WHERE id = %s", links
                )
        self.flagged += sum(1 for found, near in zip(waiting, nearest.tolist(), strict=True) if found or near)


def _jsonl_chunks(path: Path, size: int):
    """(first line number, raw lines) of a JSONL file, ``size`` lines at a time."""
    with open(path, "rb") as handle:
        number, chunk = 1, []
        for raw in handle:
            chunk.append(raw)
            if len(chunk) == size:
                yield number, chunk
                number, chunk = number + size, []
        if chunk:
            yield number, chunk


def _die_with_parent() -> None:
    """An ingest worker process ends when the Celery worker that started it dies (kill -9 included), rather
    than living on as an orphan holding a database connection."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@contextmanager
def _children_allowed():
    """Let a daemonic process start the ingest's worker processes.

    Celery's prefork workers are daemonic, and multiprocessing refuses children to a daemonic process
    so that none outlives it. The pool is shut down before the ingest returns (and its processes exit
    when their parent's pipe closes), so the flag is lifted while it runs. ``_config`` is private to
    multiprocessing: this is the usual workaround, there is no public switch.
    """
    config = multiprocessing.current_process()._config
    daemon = config.get("daemon")
    config["daemon"] = False
    try:
        yield
    finally:
        if daemon is not None:
            config["daemon"] = daemon


def _prepared(upload: Upload, path: Path, total: int):
    """The file's lines as prepare.Prepared chunks, in file order.

    A big JSONL file is prepared by worker processes, a chunk of raw lines each, while this process
    stores; at most two chunks per worker are in flight, so memory stays flat. Other files, small
    files and INGEST_WORKERS=0 are prepared here. The workers are forked: they start at once, with
    everything imported, and run only datanets.prepare (never the inherited database connection).
    """
    schema = str(upload.datanet.schema)  # a plain str, not a Choices member, crosses to the workers
    workers = settings.INGEST_WORKERS
    if upload.format != "jsonl" or total < settings.INGEST_POOL_MIN_LINES or workers < 1:
        lines = records.read_lines(path, upload.format, schema)
        while chunk := list(islice(lines, CHUNK)):
            yield prepare.prepare_lines(chunk, schema)
        return
    logger.info("upload %s: %s worker processes prepare %s lines", upload.pk, workers, total)
    with (
        _children_allowed(),
        ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("fork"), initializer=_die_with_parent
        ) as pool,
    ):
        pending: deque = deque()
        try:
            for first, raw in _jsonl_chunks(path, CHUNK):
                pending.append(pool.submit(prepare.prepare_jsonl, first, raw, schema))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _ingest(upload: Upload, path: Path, total: int) -> tuple[int, int, int]:
    store = _Store(upload)
    errors: list[dict] = []
    error_count = lines = 0
    for chunk in _prepared(upload, path, total):
        lines += chunk.lines
        _progress(upload, lines_read=lines, percent=min(99, 100 * lines // total))
        if chunk.errors:
            error_count += len(chunk.errors)
            room = MAX_REPORTED_ERRORS - len(errors)
            errors += [{"line": number, "reason": reason} for number, reason in chunk.errors[:room]]
        if not error_count:  # once a line is bad nothing will be stored: only keep validating
            store(chunk)
    if lines == 0:
        raise records.FileError("The file holds no records.")
    if error_count:
        upload.lines_read, upload.errors, upload.error_count = lines, errors, error_count
        raise Rejected
    store.flush()
    upload.lines_read = lines
    return store.added, store.duplicates, store.flagged


def record_create(*, datanet: Datanet, contributor, value: dict) -> Record:
    """One record from the form: validated and flagged like an uploaded one."""
    if not policy.can_contribute(contributor, datanet):
        raise ApplicationError("You may not contribute to this Datanet.")
    prepared = prepare.prepare_lines([records.Line(1, value=value)], str(datanet.schema))
    if prepared.errors:
        raise ApplicationError(f"This record is not valid: {prepared.errors[0][1]}.")
    if Record.objects.filter(datanet=datanet, content_hash=prepared.hashes[0]).exists():
        raise ApplicationError("This exact record is already in the Datanet.")
    matches = _band_matches(datanet, prepared.keys[0])
    record_flags = [*prepared.flags[0], NEAR_DUPLICATE] if matches else prepared.flags[0]
    with transaction.atomic():
        created = Record.objects.create(
            datanet=datanet,
            contributor=contributor,
            content=orjson.loads(prepared.contents[0]),
            content_hash=prepared.hashes[0],
            token_count=prepared.tokens[0],
            flags=record_flags,
            flag_kinds=_kinds(record_flags),
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
