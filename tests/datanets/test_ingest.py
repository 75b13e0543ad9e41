"""Ingest: a real worker validates a file, stores every record or none, and reports bad lines."""

import random
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from datanets import flags, services
from datanets.ingest import pipeline, rowstore
from datanets.models import Record, RecordBand, Upload
from modelfactory.exceptions import ApplicationError
from tests.conftest import WorkerProcess, database_url_for_workers
from tests.datanets.conftest import jsonl_file, qa
from tests.waiting import wait_until


def test_upload_is_ingested_by_a_real_worker_with_duplicates_and_flags(
    celery_worker_process, datanet, contributor, django_capture_on_commit_callbacks
):
    rows = [qa(i) for i in range(1, 6)] + [qa(1)]  # line 6 repeats line 1
    rows.append({"instruction": "Who to call?", "output": "Write to jane.doe@example.org"})
    with django_capture_on_commit_callbacks(execute=True):
        upload = services.upload_create(datanet=datanet, contributor=contributor, file=jsonl_file(rows))
    # The task went out on commit through the real broker; the worker process runs it.
    result = wait_until(lambda: Upload.objects.get(pk=upload.pk), lambda u: u.finished, timeout=60)
    assert result.status == Upload.Status.DONE, result.message
    assert (result.records_added, result.duplicates, result.flagged) == (6, 1, 1)
    stored = Record.objects.filter(datanet=datanet).order_by("line_number")
    assert [r.line_number for r in stored] == [1, 2, 3, 4, 5, 7]
    assert all(r.contributor == contributor and r.status == "pending" for r in stored)
    assert stored.last().flag_kinds == "email"

    # The same file again: everything is an exact duplicate of what the Datanet holds.
    services.upload_ingest(
        upload=Upload.objects.create(
            datanet=datanet,
            contributor=contributor,
            filename="again.jsonl",
            format="jsonl",
            size_bytes=1,
            file=Upload.objects.get(pk=upload.pk).file.name,
        )
    )
    assert Record.objects.filter(datanet=datanet).count() == 6


def test_a_prefork_worker_prepares_a_big_upload_in_worker_processes(
    transactional_db, tmp_path, datanet, contributor, django_capture_on_commit_callbacks
):
    """The worker as `make run` and compose start it (prefork: its pool processes are daemonic, and
    multiprocessing refuses them children unless the ingest lifts that) with an upload big enough for
    worker processes. A refusal would fail the upload."""
    env = {"INGEST_POOL_MIN_LINES": "1", "INGEST_WORKERS": "2"}
    worker = WorkerProcess(
        database_url_for_workers(), tmp_path / "worker.log", queues="default", pool="prefork", env=env
    )
    try:
        rows = [qa(i) for i in range(1, 41)] + [qa(3)]
        with django_capture_on_commit_callbacks(execute=True):
            upload = services.upload_create(datanet=datanet, contributor=contributor, file=jsonl_file(rows))
        result = wait_until(lambda: Upload.objects.get(pk=upload.pk), lambda u: u.finished, timeout=60)
    finally:
        worker.stop()
    assert result.status == Upload.Status.DONE, result.message + worker.log_path.read_text()[-2000:]
    assert (result.records_added, result.duplicates) == (40, 1)
    assert f"upload {upload.pk}: 2 worker processes prepare 41 lines" in worker.log_path.read_text()


def ingest(datanet, contributor, file):
    upload = services.upload_create(datanet=datanet, contributor=contributor, file=file)
    return services.upload_ingest(upload=Upload.objects.get(pk=upload.pk))


def test_one_bad_line_rejects_the_whole_upload_and_stores_nothing(datanet, contributor):
    rows = [qa(1), "{broken", qa(3), {"instruction": "no answer"}]
    upload = ingest(datanet, contributor, jsonl_file(rows))
    assert upload.status == Upload.Status.REJECTED
    assert upload.error_count == 2
    assert [e["line"] for e in upload.errors] == [2, 4]
    assert "nothing was stored" in upload.message
    assert Record.objects.count() == 0
    assert not upload.file  # the rejected file is not kept


@pytest.mark.parametrize(
    "name, data, reason",
    [
        ("bom.jsonl", b"\xef\xbb\xbf{}\n", "byte-order mark"),
        ("bin.jsonl", b"\x00\x01\x02binary", "looks binary"),
        ("blank.jsonl", b"   \n\n", "empty"),
        ("cols.csv", b"instruction,notes\nq,n\n", "missing column(s): output"),
        ("bad.parquet", b"not parquet at all", "not a Parquet file"),
    ],
)
def test_whole_file_rejections_change_nothing(datanet, contributor, name, data, reason):
    upload = ingest(datanet, contributor, SimpleUploadedFile(name, data))
    assert upload.status == Upload.Status.REJECTED
    assert reason in upload.errors[0]["reason"]
    assert Record.objects.count() == 0


def test_refused_before_storing(datanet, contributor, settings):
    with pytest.raises(ApplicationError, match="unsupported file type"):
        services.upload_create(datanet=datanet, contributor=contributor, file=SimpleUploadedFile("x.xlsx", b"x"))
    with pytest.raises(ApplicationError, match="empty"):
        services.upload_create(datanet=datanet, contributor=contributor, file=SimpleUploadedFile("x.jsonl", b""))
    settings.MAX_UPLOAD_BYTES = 10
    with pytest.raises(ApplicationError, match="upload limit is 10 bytes"):
        services.upload_create(datanet=datanet, contributor=contributor, file=jsonl_file([qa(1)]))
    assert Upload.objects.count() == 0


def test_cancel_leaves_nothing(datanet, contributor):
    upload = services.upload_create(datanet=datanet, contributor=contributor, file=jsonl_file([qa(1), qa(2)]))
    services.upload_cancel(upload=upload, by=contributor)
    upload = services.upload_ingest(upload=Upload.objects.get(pk=upload.pk))
    assert upload.status == Upload.Status.CANCELLED
    assert Record.objects.count() == 0
    with pytest.raises(ApplicationError, match="already finished"):
        services.upload_cancel(upload=upload, by=contributor)


def test_a_failure_in_the_middle_rolls_back_every_record(datanet, contributor, monkeypatch):
    rows = [qa(i) for i in range(2500)]
    upload = services.upload_create(datanet=datanet, contributor=contributor, file=jsonl_file(rows))
    real_flags = flags.personal_data_flags
    calls = {"n": 0}

    def breaks_late(text):  # a fault after the first batch of 1000 rows was written
        calls["n"] += 1
        if calls["n"] == 2200:
            raise OSError("disk full")
        return real_flags(text)

    monkeypatch.setattr(flags, "personal_data_flags", breaks_late)
    with pytest.raises(OSError):
        services.upload_ingest(upload=Upload.objects.get(pk=upload.pk))
    upload.refresh_from_db()
    assert upload.status == Upload.Status.FAILED
    assert Record.objects.count() == 0


def test_csv_json_and_parquet_uploads(datanet, contributor, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv_upload = ingest(datanet, contributor, SimpleUploadedFile("a.csv", b"instruction,output\nq1,a1\nq2,a2\n"))
    assert csv_upload.records_added == 2
    json_upload = ingest(datanet, contributor, SimpleUploadedFile("b.json", b'[{"instruction":"q3","output":"a3"}]'))
    assert json_upload.records_added == 1
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"instruction": ["q4"], "output": ["a4"]}), path)
    parquet_upload = ingest(datanet, contributor, SimpleUploadedFile("c.parquet", path.read_bytes()))
    assert parquet_upload.records_added == 1
    assert Record.objects.count() == 4


def test_files_that_fail_deep_in_parsing_get_a_line_or_file_reason(datanet, contributor, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    huge = '{"instruction": "q", "output": ' + "1" * 5001 + "}"  # more digits than Python converts
    upload = ingest(datanet, contributor, jsonl_file([qa(1), huge]))
    assert upload.status == Upload.Status.REJECTED, upload.message
    assert [e["line"] for e in upload.errors] == [2] and "Exceeds the limit" in upload.errors[0]["reason"]
    array = ingest(datanet, contributor, SimpleUploadedFile("b.json", ("[" + huge + "]").encode()))
    assert array.status == Upload.Status.REJECTED and "line 1: unreadable JSON" in array.message

    path = tmp_path / "damaged.parquet"
    rows = {"instruction": [f"q{i}" for i in range(5000)], "output": [f"a{i} " * 20 for i in range(5000)]}
    pq.write_table(pa.table(rows), path, row_group_size=1000, compression="snappy")
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 2000] = b"\xff" * 2000  # a row group's pages; the footer is intact
    damaged = ingest(datanet, contributor, SimpleUploadedFile("damaged.parquet", bytes(data)))
    assert damaged.status == Upload.Status.REJECTED and "damaged or truncated" in damaged.message
    assert Record.objects.count() == 0


def test_form_record_and_withdraw(datanet, contributor):
    record = services.record_create(datanet=datanet, contributor=contributor, value=qa(1))
    with pytest.raises(ApplicationError, match="already in the Datanet"):
        services.record_create(datanet=datanet, contributor=contributor, value=qa(1))
    with pytest.raises(ApplicationError, match="not valid"):
        services.record_create(datanet=datanet, contributor=contributor, value={"instruction": "q"})
    services.record_withdraw(record=record, by=contributor)
    record.refresh_from_db()
    assert record.status == Record.Status.WITHDRAWN
    with pytest.raises(ApplicationError, match="still pending"):
        services.record_withdraw(record=record, by=contributor)


def test_near_duplicates_in_one_upload_are_linked_for_moderators(datanet, contributor):
    long_answer = (
        "The patient, a 54-year-old man, presented to the emergency department with crushing chest pain "
        "radiating to the left arm and jaw, sweating and nausea that began forty minutes earlier while he "
        "was shovelling snow. An ECG showed ST elevation in the inferior leads, so he was given aspirin, "
        "heparin and was taken to the catheter laboratory for primary angioplasty of the right coronary artery."
    )
    rows = [
        {"instruction": "Summarise case A", "output": long_answer},
        {"instruction": "Summarise case A", "output": long_answer.replace("shovelling snow", "clearing snow")},
    ]
    upload = ingest(datanet, contributor, jsonl_file(rows))
    assert upload.status == Upload.Status.DONE and upload.flagged == 1
    first, second = Record.objects.order_by("line_number")
    assert second.near_duplicate_of_id == first.pk and second.flag_kinds == "near_duplicate"
    assert first.near_duplicate_of_id is None


NEAR_CASE = (
    "The patient, a 54-year-old man, presented to the emergency department with crushing chest pain "
    "radiating to the left arm and jaw, sweating and nausea that began forty minutes earlier while he "
    "was shovelling snow. An ECG showed ST elevation in the inferior leads, so he was given aspirin, "
    "heparin and was taken to the catheter laboratory for primary angioplasty of the right coronary artery."
)


def test_near_duplicate_of_a_record_from_an_earlier_upload_is_flagged_and_linked(datanet, contributor):
    first = ingest(datanet, contributor, jsonl_file([qa(1), {"instruction": "Summarise case A", "output": NEAR_CASE}]))
    assert first.flagged == 0
    original = Record.objects.get(line_number=2, upload=first)
    later = [qa(2), {"instruction": "Summarise case A", "output": NEAR_CASE.replace("shovelling", "clearing")}]
    second = ingest(datanet, contributor, jsonl_file(later))
    assert (second.records_added, second.flagged) == (2, 1)
    near = Record.objects.get(upload=second, line_number=2)
    assert near.flag_kinds == "near_duplicate" and near.near_duplicate_of_id == original.pk
    assert near.content == later[1] | {"input": ""} and near.flags[-1]["kind"] == "near_duplicate"
    assert abs(near.created_at - timezone.now()) < timedelta(minutes=5)
    assert Record.objects.get(upload=second, line_number=1).flag_kinds == ""


@pytest.mark.parametrize("band_batch", [4, 20_000], ids=["later band batch", "same band batch"])
def test_near_duplicates_across_batches_and_withdrawn_records(datanet, contributor, monkeypatch, band_batch):
    monkeypatch.setattr(pipeline, "CHUNK", 3)  # the near duplicate lands in a later chunk than its original
    monkeypatch.setattr(rowstore, "BAND_BATCH", band_batch)  # and its bands are matched with or after the original's
    rows = [{"instruction": "Summarise case A", "output": NEAR_CASE}] + [qa(i) for i in range(2, 8)]
    rows.append({"instruction": "Summarise case A", "output": NEAR_CASE.replace("jaw", "neck")})
    rows.append(qa(2))  # an exact duplicate of line 2, in a later batch: skipped
    upload = ingest(datanet, contributor, jsonl_file(rows))
    assert (upload.records_added, upload.duplicates, upload.flagged) == (8, 1, 1)
    first, near = Record.objects.get(line_number=1), Record.objects.get(line_number=8)
    assert near.near_duplicate_of_id == first.pk

    # A withdrawn record no longer makes a new one a near duplicate; the form flags like an upload does.
    services.record_withdraw(record=first, by=contributor)
    services.record_withdraw(record=near, by=contributor)
    fresh = services.record_create(
        datanet=datanet, contributor=contributor, value={"instruction": "Case A", "output": NEAR_CASE}
    )
    assert fresh.flag_kinds == "" and fresh.near_duplicate_of is None
    again = services.record_create(
        datanet=datanet, contributor=contributor, value={"instruction": "Case A?", "output": NEAR_CASE}
    )
    assert again.flag_kinds == "near_duplicate" and again.near_duplicate_of_id == fresh.pk


def test_records_and_bands_stored_in_several_statements_are_all_kept(datanet, contributor):
    """1,401 records, and their 11,208 band rows: each takes several INSERT statements on SQLite."""
    rng = random.Random(7)
    words = [
        f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "pe", "ro", "su", "ti") for b in ("ba", "do", "fe", "gu", "hi")
    ]
    rows = [qa(i, " ".join(rng.choices(words, k=20))) for i in range(1, 1401)]
    rows.append({"instruction": rows[0]["instruction"], "output": rows[0]["output"] + " again"})
    upload = ingest(datanet, contributor, jsonl_file(rows))
    assert (upload.records_added, upload.duplicates, upload.flagged) == (1401, 0, 1)
    assert RecordBand.objects.filter(datanet=datanet).count() == 1401 * flags.BANDS
    near = Record.objects.get(line_number=1401)
    assert near.near_duplicate_of_id == Record.objects.get(line_number=1).pk and near.flag_kinds == "near_duplicate"


def test_exact_duplicates_of_stored_records_are_not_counted_as_flagged(datanet, contributor):
    rows = [qa(1), {"instruction": "Summarise case A", "output": NEAR_CASE}]
    ingest(datanet, contributor, jsonl_file(rows))
    again = ingest(datanet, contributor, jsonl_file(rows + [qa(3)]))
    assert (again.records_added, again.duplicates, again.flagged) == (1, 2, 0)


def test_worker_processes_store_and_reject_exactly_like_the_ingest_alone(datanet, contributor, settings, monkeypatch):
    monkeypatch.setattr(pipeline, "CHUNK", 3)  # several chunks, each prepared by a worker process
    rows = [qa(i) for i in range(1, 8)] + [qa(2), "", {"instruction": "Who?", "output": "Mail jane.doe@example.org"}]
    results = {}
    for workers, pool_min in ((0, 10**9), (2, 1)):
        settings.INGEST_WORKERS, settings.INGEST_POOL_MIN_LINES = workers, pool_min
        Record.objects.all().delete()
        good = ingest(datanet, contributor, jsonl_file(rows))
        stored = list(Record.objects.order_by("line_number").values_list("line_number", "content_hash", "flag_kinds"))
        bad = ingest(datanet, contributor, jsonl_file(rows[:4] + ["{broken", {"instruction": "no answer"}, qa(1)]))
        results[workers] = (good.records_added, good.duplicates, good.flagged, good.lines_read, stored, bad.errors)
    assert results[0] == results[2]
    assert results[2][:4] == (8, 1, 1, 9)  # the blank line 9 is not a record
    assert [e["line"] for e in results[2][5]] == [5, 6]
