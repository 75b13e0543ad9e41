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


def test_a_finished_jobs_adapter_answers_with_attribution(quick_adapter, inference_worker_process):
    """Before publishing, the job's own outputs are served; its index is built on the worker when first needed."""
    target = services.target_for_job(quick_adapter.job)
    messages = [{"role": "user", "content": "Name fruit 2."}]
    sampling = services.clean_sampling(temperature=0, max_tokens=8)
    answers = {
        side: services.chat_complete(
            request_id=services.chat_start(
                target=target, messages=messages, sampling=sampling, owner="test", use_adapter=side == "adapter"
            )
        )
        for side in ("adapter", "base")
    }
    assert answers["adapter"]["type"] == answers["base"]["type"] == "done"
    assert "note" in answers["adapter"]["attribution"] and "attribution" not in answers["base"]
    assert answers["adapter"]["usage"]["completion_tokens"] <= 8
