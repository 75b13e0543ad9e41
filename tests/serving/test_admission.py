"""The inference service has bounds: answers in flight per user or token, and in all; past them a clear
"busy, try again" (429 or 503) rather than a queue that starves everyone. No worker runs: answers wait."""

import json

from django.test import Client
from django.urls import reverse

from publishing import services as publishing_services
from serving import services


def test_past_a_users_or_the_services_bound_the_answer_is_busy(quick_adapter, trainer_user, settings):
    settings.SERVING_MAX_PER_USER, settings.SERVING_MAX_QUEUE = 2, 3
    _, secret = publishing_services.token_create(user=trainer_user, name="app", scope="read")
    client = Client()
    body = {
        "model": "codes-expert",
        "messages": [{"role": "user", "content": "What does code 1 mean?"}],
        "stream": True,
    }

    def ask():
        return client.post(
            "/v1/chat/completions",
            data=json.dumps(body),
            content_type="application/json",
            headers={"Authorization": f"Bearer {secret}"},
        )

    first, second = ask(), ask()
    assert (first.status_code, second.status_code) == (200, 200)
    third = ask()
    assert third.status_code == 429 and int(third["Retry-After"]) > 0
    assert (
        third.json()["error"]["type"] == "rate_limit_error"
        and "2 answers in progress" in third.json()["error"]["message"]
    )

    # The worker's last event for an answer frees its place.
    first_chunk = json.loads(next(iter(first.streaming_content)).decode().removeprefix("data: "))
    services.chat_push(
        request_id=first_chunk["id"].removeprefix("chatcmpl-"),
        event={"type": "done", "text": "", "finish_reason": "stop"},
    )
    assert ask().status_code == 200

    # Two answers of this token wait; a playground turn is two more: past the service's bound of 3.
    page = reverse("adapter_playground", args=[quick_adapter.slug, quick_adapter.version])
    browser = Client()
    browser.force_login(trainer_user)
    turn = browser.post(
        page,
        {"message": "Hi", "temperature": 0.7, "top_p": 0.95, "max_tokens": 4},
        headers={"Accept": "application/json"},
    )
    assert turn.status_code == 503 and "full queue" in turn.content.decode()
