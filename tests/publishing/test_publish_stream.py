"""records.jsonl and the manifest's Merkle roots come from database streams, byte for byte what sorting the
whole training set in memory gave."""

import hashlib
import inspect
import io
import random

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from attribution import manifest as manifest_lib
from datanets import services as datanet_services
from datanets.merkle import MerkleBuilder, merkle_root
from datanets.models import Record
from publishing import publish
from tests.factories import DatanetFactory, UserFactory


def test_the_merkle_builder_folds_a_sorted_stream_to_the_same_root():
    rng = random.Random(0)
    for n in [*range(0, 70), 255, 256, 257, 1025]:
        hashes = sorted(hashlib.sha256(rng.randbytes(8)).hexdigest() for _ in range(n))
        if n > 3:
            hashes[2] = hashes[1]  # a record in two versions of the data comes twice
        builder = MerkleBuilder()
        for h in hashes:
            builder.add(h)
        assert (builder.root(), builder.count) == (merkle_root(hashes), n), n
    with pytest.raises(ValueError, match="ascending"):
        builder.add("0" * 64)


def test_the_records_writer_writes_each_row_before_it_takes_the_next():
    rows = [
        {"datanet": "a", "version": 1, "content_hash": f"{i:064x}", "contributor": "c", "tokens": i} for i in range(50)
    ]
    handle = io.BytesIO()

    def stream():
        for i, row in enumerate(rows):
            assert handle.getvalue().count(b"\n") == i  # every earlier row is in the file already
            yield row

    assert manifest_lib.records_jsonl_write(stream(), handle) == 50
    assert handle.getvalue() == manifest_lib.records_jsonl(list(reversed(rows)))
    with pytest.raises(ValueError, match="sorted"):
        manifest_lib.records_jsonl_write(iter(reversed(rows)), io.BytesIO())


def published_version(name, authors, n):
    datanet = DatanetFactory(name=name, visibility="public", created_by=authors[0])
    for i in range(n):
        value = {"instruction": f"What is {name} fact {i}?", "output": f"{name} fact {i} is {i * 7}."}
        datanet_services.record_create(datanet=datanet, contributor=authors[i % len(authors)], value=value)
    Record.objects.filter(datanet=datanet).update(status="approved")
    return datanet_services.version_publish(datanet=datanet, by=UserFactory(is_staff=True))


def test_records_jsonl_and_contributor_roots_stream_from_the_database(db, monkeypatch, tmp_path):
    authors = [UserFactory() for _ in range(3)]
    versions = [published_version("Zeta", authors, 17), published_version("Alpha", authors[1:], 11)]
    versions.sort(key=lambda v: (v.datanet.slug, v.number))
    held_out = set(Record.objects.order_by("?").values_list("content_hash", flat=True)[:5])
    monkeypatch.setattr(publish, "CHUNK_ROWS", 4)  # several fetches and progress reports for 28 rows

    with CaptureQueriesContext(connection) as queries:
        rows = publish.record_rows(versions, held_out)
    assert inspect.isgenerator(rows) and not queries.captured_queries  # nothing read until the writer pulls
    reports = []
    path = tmp_path / "records.jsonl"
    held = publish.records_write(versions, held_out, path, lambda phase, **rows: reports.append(rows))

    # What publishing wrote before streaming: every row in a list, sorted in Python.
    in_memory = list(publish.record_rows(versions, held_out))
    assert path.read_bytes() == manifest_lib.records_jsonl(in_memory)
    assert [r["rows_done"] for r in reports] == [0, 4, 8, 12, 16, 20, 24, 28, 28]
    assert {r["rows_total"] for r in reports} == {28}
    assert held == manifest_lib.held_out_summary(in_memory) and held["records"] == 5
    streamed = manifest_lib.contributor_summary_streamed(publish.contributor_rows(versions, held_out))
    assert streamed == manifest_lib.contributor_summary(in_memory)
    assert len(streamed[0]) == 3 and streamed[1]["records"] == 23
