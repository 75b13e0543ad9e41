"""The whole loop with the official openai client, unchanged but for base_url and key, against a live
server, a real Celery worker training a tiny model, and the inference worker."""

import io

import pytest

from tests.waiting import wait_until
from training.models import FineTuneJob

from .conftest import chat_lines


def test_the_openai_client_fine_tunes_and_chats(
    live_server, token, tiny_base_model, celery_worker_process, inference_worker_process
):
    from openai import BadRequestError, OpenAI

    client = OpenAI(base_url=f"{live_server.url}/v1", api_key=token, max_retries=0, timeout=180)

    file = client.files.create(file=("codes.jsonl", io.BytesIO(chat_lines(12))), purpose="fine-tune")
    assert file.status == "processed" and file.id.startswith("file-")
    assert [f.id for f in client.files.list()] == [file.id]
    assert client.files.content(file.id).read() == chat_lines(12)

    job = client.fine_tuning.jobs.create(
        model="Tiny Llama",
        training_file=file.id,
        suffix="codes",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4}}},
    )
    assert job.status in ("queued", "running")

    def latest_event() -> str:
        return client.fine_tuning.jobs.list_events(job.id, limit=1).data[0].message

    ends = ("The job has successfully completed", "The job failed", "The job was cancelled")
    last = wait_until(
        latest_event,
        lambda message: message.startswith(ends),
        timeout=600,
        every=1,
        describe=lambda: celery_worker_process.log_path.read_text()[-3000:],
    )
    done = client.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded", last
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert messages[0] == "The job has successfully completed" and messages[-1].startswith("Created")
    assert any(m.startswith("Step 1/") for m in messages)
    name = done.fine_tuned_model
    assert name == f"ft:tiny-llama:clinic:codes:{job.id}" and done.trained_tokens > 0
    assert name in [m.id for m in client.models.list()]

    stream = client.chat.completions.create(
        model=name,
        messages=[{"role": "user", "content": "What does code 3 mean?"}],
        stream=True,
        temperature=0,
        max_tokens=12,
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.fine_tuned_model_checkpoint for c in checkpoints] == [name] and checkpoints[0].step_number > 0

    celery_worker_process.stop()  # no worker takes the next job: it waits queued (a tiny run ends before a cancel)
    other = client.fine_tuning.jobs.create(model="Tiny Llama", training_file=file.id, hyperparameters={"n_epochs": 1})
    client.fine_tuning.jobs.cancel(other.id)
    cancelled = wait_until(
        lambda: client.fine_tuning.jobs.retrieve(other.id), lambda j: j.status == "cancelled", timeout=120, every=1
    )
    assert cancelled.fine_tuned_model is None
    assert FineTuneJob.objects.get(pk=int(other.id.removeprefix("ftjob-"))).status == "cancelled"  # the browser's row
    with pytest.raises(BadRequestError, match="preference format"):
        client.fine_tuning.jobs.create(model="Tiny Llama", training_file=file.id, method={"type": "dpo"})
    first = client.fine_tuning.jobs.list(limit=1)
    assert [j.id for j in first.data] == [other.id] and first.has_more
    assert [j.id for j in first] == [other.id, job.id]  # the client follows `after` page by page
