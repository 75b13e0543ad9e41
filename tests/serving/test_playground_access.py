"""Who reaches the playground: like downloads, with the same 404 for missing and forbidden."""

from django.test import Client
from django.urls import reverse

from publishing.models import Adapter
from serving import services
from tests.factories import MembershipFactory, UserFactory


def test_playground_pages_follow_the_download_rules(quick_adapter, trainer_user, team):
    page = reverse("adapter_playground", args=[quick_adapter.slug, quick_adapter.version])
    job_page = reverse("job_playground", args=[quick_adapter.job_id])
    client = Client()
    assert client.get(page).status_code == 302  # log in first
    client.force_login(trainer_user)
    body = client.get(page).content.decode()
    assert "Codes Expert v1" in body and 'id="chat-form"' in body and "js/playground.js" in body
    detail = client.get(reverse("adapter_detail", args=[quick_adapter.slug, quick_adapter.version])).content.decode()
    assert page in detail
    assert client.get(job_page).status_code == 200
    assert job_page in client.get(reverse("job_detail", args=[quick_adapter.job_id])).content.decode()

    stranger = Client()
    stranger.force_login(MembershipFactory(user=UserFactory(), role="owner").user)
    assert stranger.get(page).status_code == 404
    assert stranger.get(reverse("adapter_playground", args=["nope", 1])).status_code == 404
    assert stranger.get(job_page).status_code == 404
    Adapter.objects.filter(pk=quick_adapter.pk).update(visibility="public")
    assert stranger.get(page).status_code == 200

    member = Client()
    member.force_login(MembershipFactory(team=team, role="member").user)
    assert member.get(job_page).status_code == 404  # a job is its owner's until published

    # An answer's stream belongs to whoever asked for it.
    request_id = "0" * 32
    services._redis().set(f"mf:chat:{request_id}:owner", f"user:{trainer_user.pk}", ex=60)
    assert stranger.get(reverse("playground_stream", args=[request_id])).status_code == 404
    services.chat_push(request_id=request_id, event={"type": "done", "text": "hi", "finish_reason": "stop"})
    response = client.get(reverse("playground_stream", args=[request_id]))
    assert response["Content-Type"] == "text/event-stream"
    assert b"event: done" in b"".join(response.streaming_content)


def test_the_playground_says_busy_past_a_users_message_limit(quick_adapter, trainer_user, settings):
    settings.PLAYGROUND_RATE_LIMIT = "2/d"
    page = reverse("adapter_playground", args=[quick_adapter.slug, quick_adapter.version])
    client = Client()
    client.force_login(trainer_user)
    message = {"message": "What does code 1 mean?", "temperature": 0.7, "top_p": 0.95, "max_tokens": 4}
    answers = [client.post(page, message, headers={"Accept": "application/json"}) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert "Busy" in answers[2].content.decode() and int(answers[2]["Retry-After"]) > 0
    without_script = client.post(page, message)
    assert without_script.status_code == 200 and "Busy: at most 2/d messages" in without_script.content.decode()
