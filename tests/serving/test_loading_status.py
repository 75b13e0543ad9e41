"""The first answer says that it waits for the model to load (with its stages); later answers stream at once."""

import uuid

from django.urls import reverse

from serving import services, tasks

QUESTION = [{"role": "user", "content": "Name fruit 2."}]


def ask(target, *, use_adapter=True, owner=None) -> str:
    """Run one answer in this process as the inference worker would; returns its request id."""
    request_id = uuid.uuid4().hex
    if owner:
        services._redis().set(f"{services._events_key(request_id)}:owner", owner)
    sampling = services.clean_sampling(temperature=0, max_tokens=4)
    tasks.chat_task(request_id, target.payload, QUESTION, sampling, use_adapter)
    return request_id


def test_the_first_answer_says_it_loads_the_model_and_the_adapter(client, quick_adapter, trainer_user):
    target = services.target_for_adapter(quick_adapter)
    tasks._engines.clear()
    try:
        first = list(services.chat_events(request_id=ask(target), timeout_s=5))
        statuses = [e for e in first if e["type"] == "status"]
        assert [(e["stage"], e["step"], e["steps"]) for e in statuses] == [("model", 1, 2), ("adapter", 2, 2)]
        assert statuses[0]["message"].startswith("Loading the model")
        assert first[:2] == statuses and first[-1]["type"] == "done"

        again = list(services.chat_events(request_id=ask(target), timeout_s=5))
        assert [e["type"] for e in again if e["type"] != "token"] == ["done"]  # loaded: tokens at once
        base = list(services.chat_events(request_id=ask(target, use_adapter=False), timeout_s=5))
        assert not [e for e in base if e["type"] == "status"]

        # The page's stream passes the stages on; the page shows what it waits for until the first token.
        tasks._engines.clear()
        client.force_login(trainer_user)
        request_id = ask(target, owner=f"user:{trainer_user.pk}")
        body = b"".join(client.get(reverse("playground_stream", args=[request_id])).streaming_content).decode()
        assert body.startswith("event: status\n") and "Loading the adapter" in body
        page = client.get(reverse("adapter_playground", args=[quick_adapter.slug, quick_adapter.version]))
        assert 'class="loading" role="status"' in page.content.decode()
    finally:
        tasks._engines.clear()
