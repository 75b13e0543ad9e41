"""The row store of the ingest: records and their band keys written with raw SQL, one way for SQLite and
one for PostgreSQL, because the ORM's and the drivers' per-row work cost more than the inserts."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from itertools import chain

import numpy as np
import orjson
from django.db import connection, models
from django.utils import timezone

from datanets import flags, prepare
from datanets.models import Datanet, Record, RecordBand, Upload

BAND_BATCH = 20_000  # stored records whose band keys are matched and stored at once
STATEMENT_ROWS = 2048  # rows a SQLite INSERT statement holds at most
ARRAY_ROWS = 16_384  # rows a PostgreSQL INSERT statement holds at most


def _json_integers(integers: np.ndarray) -> str:
    """'[1,2,3]', written by orjson straight from the array."""
    return orjson.dumps(np.ascontiguousarray(integers, dtype=np.int64), option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _pg_integers(integers: np.ndarray) -> str:
    """'{1,2,3}': a PostgreSQL array literal, which the server parses faster than psycopg adapts ints."""
    return "{" + _json_integers(integers)[1:-1] + "}"


def band_matches(datanet: Datanet, keys: np.ndarray) -> dict[int, int]:
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


def insert_values(model, fields: tuple[str, ...], params: list | np.ndarray, suffix: str = "") -> list[tuple]:
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


def flag_kinds(record_flags: list[dict]) -> str:
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


class RecordStore:
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
                flag_kinds(found) if found else "",
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
        ids = dict(insert_values(Record, INSERT_FIELDS, list(chain.from_iterable(rows)), returning))
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
        earliest[order] = _earliest_sharing(ranked, owners, new_key, band_matches(self.datanet, ranked[new_key]))
        nearest = earliest.reshape(len(ids), flags.BANDS).min(axis=1)
        nearest[nearest == NO_RECORD] = 0
        bands = np.column_stack((np.full(len(ranked), self.datanet.pk, dtype=np.int64), ranked, owners))
        insert_values(RecordBand, ("datanet", "key", "record"), bands.ravel())
        links = []
        for at in np.flatnonzero(nearest).tolist():
            found = [*waiting[at], NEAR_DUPLICATE]
            links.append((orjson.dumps(found).decode(), flag_kinds(found), int(nearest[at]), int(ids[at])))
        if links:
            table = connection.ops.quote_name(Record._meta.db_table)
            with connection.cursor() as cursor:
                cursor.executemany(
                    f"UPDATE {table} SET flags = %s, flag_kinds = %s, near_duplicate_of_id = %s WHERE id = %s", links
                )
        self.flagged += sum(1 for found, near in zip(waiting, nearest.tolist(), strict=True) if found or near)
