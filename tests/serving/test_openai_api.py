"""The official openai client against /v1/ and the real inference worker; attribution; access rules."""

import pytest
from django.test import Client

from accounts.contributors import contributor_pseudonym
from datanets.models import Record
from publishing import services
from publishing.models import Adapter
from tests.factories import MembershipFactory, UserFactory


def openai_client(live_server, secret):
    from openai import OpenAI

    return OpenAI(base_url=f"{live_server.url}/v1", api_key=secret, max_retries=0, timeout=180)


def test_openai_client_streams_an_attributed_answer(live_server, chat_adapter, trainer_user, inference_worker_process):
    _, secret = services.token_create(user=trainer_user, name="app", scope="read")
    client = openai_client(live_server, secret)
    # The published adapter, and the job it came from by its fine_tuned_model name (its owner's token).
    assert [m.id for m in client.models.list().data] == [
        "codes-expert",
        f"ft:tiny-llama:builder::ftjob-{chat_adapter.job_id}",
    ]

    stream = client.chat.completions.create(
        model="codes-expert",
        messages=[{"role": "user", "content": "What does code 5 mean?"}],
        stream=True,
        temperature=0,
        max_tokens=40,
    )
    chunks = list(stream)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) > 3  # token by token, not one block
    answer = "".join(deltas)
    assert chunks[-1].choices[0].finish_reason == "stop"

    # The tiny adapter learned its records by heart: its answer repeats one of alice's verbatim.
    repeated = [r for r in Record.objects.filter(adapter_uses__adapter=chat_adapter) if r.content["output"] in answer]
    assert repeated and repeated[0].contributor.username == "alice", answer
    attribution = chunks[-1].model_extra["attribution"]
    span = max(attribution["spans"], key=lambda s: s["tokens"])
    assert span["text"] in answer and repeated[0].content["output"] in span["text"]
    assert span["record"]["id"] == repeated[0].pk
    assert span["contributor"] == contributor_pseudonym(repeated[0].contributor_id)

    # Not streamed: the same shape as OpenAI's, plus the attribution. bob's fruit is bob's.
    completion = client.chat.completions.create(
        model="codes-expert", messages=[{"role": "user", "content": "Name fruit 3."}], temperature=0
    )
    text = completion.choices[0].message.content
    bob = Record.objects.get(contributor__username="bob", content__output__in=[text])
    assert completion.usage.completion_tokens > 0
    spans = completion.model_extra["attribution"]["spans"]
    assert spans[0]["contributor"] == contributor_pseudonym(bob.contributor_id)

    # Sampling parameters are honoured and validated.
    sampled = client.chat.completions.create(
        model="codes-expert", messages=[{"role": "user", "content": "Hi"}], temperature=1.5, top_p=0.5, max_tokens=3
    )
    assert sampled.usage.completion_tokens <= 3
    from openai import BadRequestError

    with pytest.raises(BadRequestError, match="temperature"):
        client.chat.completions.create(model="codes-expert", messages=[{"role": "user", "content": "x"}], temperature=9)

    # An answer that repeats nothing says so.
    babble = client.chat.completions.create(
        model="codes-expert", messages=[{"role": "user", "content": "Hi"}], temperature=2, max_tokens=6
    )
    attribution = babble.model_extra["attribution"]
    assert attribution["spans"] == [] and "No span of 8 or more tokens" in attribution["note"]


def call(client, secret, model="codes-expert"):
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    chat = client.post(
        "/v1/chat/completions",
        content_type="application/json",
        headers=headers,
        data={"model": model, "messages": [{"role": "user", "content": "Hi"}]},
    )
    models = client.get("/v1/models", headers=headers)
    return chat, models


def test_access_rules(quick_adapter, team):
    """No worker runs here: every refusal happens before anything is queued."""
    client = Client()
    assert call(client, None)[0].status_code == 401
    chat, models = call(client, "mf_not-a-token")
    assert chat.status_code == 401 and chat.json()["error"]["code"] == "invalid_api_key"

    stranger = MembershipFactory(user=UserFactory(), role="owner").user
    _, secret = services.token_create(user=stranger, name="t", scope="download")
    chat, models = call(client, secret)
    assert chat.status_code == 404 and chat.json()["error"]["code"] == "model_not_found"
    assert models.json()["data"] == []
    missing = call(client, secret, model="no-such-adapter")[0]
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"  # same as forbidden

    # A member's team token for another team reaches that team's adapters and public ones only.
    member = MembershipFactory(team=team, role="member").user
    other_team = MembershipFactory(user=member, role="owner").team
    _, team_secret = services.token_create(user=member, name="t", scope="read", team=other_team)
    assert call(client, team_secret)[0].status_code == 404
    Adapter.objects.filter(pk=quick_adapter.pk).update(visibility="public")
    models = client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})  # a chat would wait for a worker
    assert [m["id"] for m in models.json()["data"]] == ["codes-expert"]  # public: any token holder

    token, own_secret = services.token_create(user=member, name="t", scope="read")
    services.token_revoke(token=token, by=member)
    assert call(client, own_secret)[0].status_code == 401
    bad = client.post(
        "/v1/chat/completions",
        content_type="application/json",
        headers={"Authorization": f"Bearer {secret}"},
        data={"model": "codes-expert", "messages": []},
    )
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


BAD_BODIES = {  # raw JSON text: what a careless or hostile client sends
    "max_tokens 1e400": '{"model": "codes-expert", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e400}',
    "max_tokens NaN": '{"model": "codes-expert", "messages": [{"role": "user", "content": "hi"}], "max_tokens": NaN}',
    "number as a text part": '{"model": "codes-expert", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}',
    "list as a role": '{"model": "codes-expert", "messages": [{"role": ["user"], "content": "hi"}]}',
    "object as a text part": '{"model": "codes-expert", "messages": [{"role": "user", "content": [{"text": {"a": 1}}]}]}',
    "nested too deep": "[" * 100_000 + "]" * 100_000,
    "not UTF-8": b'{"model": "\xff"}',
}


def test_bad_input_gets_an_openai_shaped_400_never_a_500(quick_adapter, trainer_user):
    _, secret = services.token_create(user=trainer_user, name="t", scope="read")
    client = Client(raise_request_exception=False)
    for case, body in BAD_BODIES.items():
        response = client.post(
            "/v1/chat/completions",
            data=body,
            content_type="application/json",
            headers={"Authorization": f"Bearer {secret}"},
        )
        assert response.status_code == 400, (case, response.status_code, response.content[:200])
        problem = response.json()["error"]
        assert problem["type"] == "invalid_request_error" and problem["message"], case
