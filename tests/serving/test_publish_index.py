"""Publishing an adapter queues its span index; the task builds it into storage once, from the records."""

import json

from django.core.files.storage import default_storage

from serving import services
from serving.tasks import span_index_build_task


def test_the_span_index_is_built_at_publish_time(quick_adapter):
    # The publish hook queued the task (no worker runs here): run it as the worker would, twice.
    meta = span_index_build_task(quick_adapter.pk)
    assert meta["records"] == 24 and meta["tokens"] > 24 * 10
    assert span_index_build_task(quick_adapter.pk) == meta  # idempotent
    assert span_index_build_task(10**9) is None  # a task for a vanished adapter does nothing
    prefix = f"serving/span-index/{services.target_for_adapter(quick_adapter).key}"
    table = json.loads(default_storage.open(f"{prefix}/records.json").read())
    contributors = {row["contributor"] for row in table}
    assert contributors == {c["id"] for c in quick_adapter.manifest["contributors"]} and len(contributors) == 2
