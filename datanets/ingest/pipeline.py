"""The ingest pipeline of one upload: a local copy of the file, its lines prepared (validated, normalised,
hashed, flagged) by worker processes for big files, stored chunk by chunk through the row store, with
progress and cancelling through the cache (the ingest runs inside one database transaction)."""

from __future__ import annotations

import logging
import multiprocessing
import signal
import sys
import tempfile
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from itertools import islice
from pathlib import Path

from django.conf import settings
from django.core.cache import cache
from redis.exceptions import RedisError

from datanets import prepare, records
from datanets.ingest.rowstore import RecordStore
from datanets.models import Upload

logger = logging.getLogger(__name__)

MAX_REPORTED_ERRORS = 1000
CHUNK = 2048  # lines prepared (by a worker process for big files) and stored at once


def live_key(upload_id: int) -> str:
    return f"upload:{upload_id}:live"


def cancel_key(upload_id: int) -> str:
    return f"upload:{upload_id}:cancel"


class Cancelled(Exception):
    """Someone asked to cancel the upload: the transaction rolls back."""


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


def progress(upload: Upload, *, lines_read: int, percent: int) -> None:
    """Publish progress for the upload page and stop if someone asked to cancel."""
    try:
        cache.set(live_key(upload.pk), {"lines_read": lines_read, "percent": percent}, timeout=24 * 3600)
        cancel = cache.get(cancel_key(upload.pk))
    except RedisError:  # progress is for the page: a cache that is down does not stop the ingest
        return
    if cancel:
        upload.cancel_requested = True
        raise Cancelled


class Rejected(Exception):
    """Some lines are bad: the transaction rolls back and the upload reports them."""


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


def ingest(upload: Upload, path: Path, total: int) -> tuple[int, int, int]:
    store = RecordStore(upload)
    errors: list[dict] = []
    error_count = lines = 0
    for chunk in _prepared(upload, path, total):
        lines += chunk.lines
        progress(upload, lines_read=lines, percent=min(99, 100 * lines // total))
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
