"""Files and jobs through /v1/ without a worker: what a good upload stores, and every bad request an
OpenAI-shaped 4xx that names the problem and stores nothing."""

import pytest
from django.test import Client

from datanets.models import Datanet, LedgerEntry, Record, Upload
from ftapi.models import ApiFile, ApiJob
from publishing import services as publishing_services
from tests.factories import DatanetFactory, MembershipFactory, UserFactory
from training.models import FineTuneJob

from .conftest import chat_lines, jsonl


def auth(secret):
    return {"Authorization": f"Bearer {secret}"}


def upload(client, secret, content=None, purpose="fine-tune", name="train.jsonl", **fields):
    data = {"file": jsonl(content if content is not None else chat_lines(6), name), "purpose": purpose, **fields}
    return client.post("/v1/files", data, headers=auth(secret))


def create_job(client, secret, **body):
    return client.post("/v1/fine_tuning/jobs", body, content_type="application/json", headers=auth(secret))


def stored() -> tuple:
    return (
        ApiFile.objects.count(),
        Datanet.objects.count(),
        Upload.objects.count(),
        Record.objects.count(),
        FineTuneJob.objects.count(),
        ApiJob.objects.count(),
    )


def assert_refused(response, status: int, *words, param=None):
    assert response.status_code == status, response.content
    problem = response.json()["error"]
    assert set(problem) == {"message", "type", "param", "code"}
    for word in words:
        assert word in problem["message"], problem
    if param:
        assert problem["param"] == param
    return problem


def test_a_file_becomes_a_private_datanet_version_and_a_job_trains_on_it(owner, team, token, tiny_base_model):
    client = Client()
    response = upload(client, token)
    assert response.status_code == 200, response.content
    file = response.json()
    assert file["id"].startswith("file-") and file["object"] == "file" and file["status"] == "processed"
    assert isinstance(file["created_at"], int) and file["purpose"] == "fine-tune" and file["records"] == 6

    row = ApiFile.objects.get()
    datanet = row.datanet
    assert (datanet.team, datanet.visibility, datanet.schema) == (team, "private", "chat")
    assert set(Record.objects.filter(datanet=datanet).values_list("contributor__username", "status")) == {
        ("ana", "approved")
    }
    assert row.version.number == 1 and row.version.record_count == 6
    assert LedgerEntry.objects.filter(event="record.approved").count() == 6
    assert client.get(f"/v1/files/{file['id']}", headers=auth(token)).json()["id"] == file["id"]
    assert [f["id"] for f in client.get("/v1/files", headers=auth(token)).json()["data"]] == [file["id"]]
    content = client.get(f"/v1/files/{file['id']}/content", headers=auth(token))
    assert content.status_code == 200 and b"".join(content.streaming_content) == chat_lines(6)  # as uploaded

    created = create_job(
        client,
        token,
        model="Tiny Llama",
        training_file=file["id"],
        suffix="codes",
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 2, "learning_rate_multiplier": 0.5}},
        },
    )
    assert created.status_code == 200, created.content
    job = created.json()
    assert job["id"].startswith("ftjob-") and job["status"] == "queued" and job["fine_tuned_model"] is None
    assert job["hyperparameters"] == {"n_epochs": 2, "batch_size": 2, "learning_rate_multiplier": 0.5}
    assert job["training_file"] == file["id"] and job["user_provided_suffix"] == "codes"
    run = FineTuneJob.objects.get()
    assert run.config["epochs"] == 2 and run.config["batch_size"] == 2
    assert list(run.datanet_versions.all()) == [row.version]  # the same job the browser shows

    cancelled = client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=auth(token)).json()
    assert cancelled["status"] == "cancelled"
    events = client.get(f"/v1/fine_tuning/jobs/{job['id']}/events", headers=auth(token)).json()["data"]
    assert events[0]["message"] == "The job was cancelled" and events[-1]["message"].startswith("Created")
    again = client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=auth(token))
    assert_refused(again, 400, "already cancelled")

    deleted = client.delete(f"/v1/files/{file['id']}", headers=auth(token)).json()
    assert deleted == {"id": file["id"], "object": "file", "deleted": True}
    assert client.get(f"/v1/files/{file['id']}", headers=auth(token)).status_code == 404
    assert row.version.records.count() == 6  # a published version is never changed


def test_jobs_list_pages_and_includes_the_browsers(owner, team, token, tiny_base_model):
    from tests.factories import make_version
    from training import jobs

    client = Client()
    file = upload(client, token).json()
    made = [create_job(client, token, model="tiny-llama", training_file=file["id"]).json()["id"] for _ in range(3)]
    page = client.get("/v1/fine_tuning/jobs?limit=2", headers=auth(token)).json()
    assert [j["id"] for j in page["data"]] == made[::-1][:2] and page["has_more"]
    rest = client.get(f"/v1/fine_tuning/jobs?limit=2&after={page['data'][-1]['id']}", headers=auth(token)).json()
    assert [j["id"] for j in rest["data"]] == [made[0]] and not rest["has_more"]

    browser_job = jobs.job_create(
        owner=owner,
        name="From the wizard",
        base_model=tiny_base_model,
        versions=[make_version(owner, n=8)],
        method="lora",
        preset="quick",
    )
    personal = publishing_services.token_create(user=owner, name="mine", scope="read")[1]
    listed = client.get("/v1/fine_tuning/jobs", headers=auth(personal)).json()["data"]
    assert listed[0]["id"] == f"ftjob-{browser_job.pk}" and listed[0]["training_file"] is None
    # A team token reaches the jobs started through its team only.
    assert f"ftjob-{browser_job.pk}" not in [
        j["id"] for j in client.get("/v1/fine_tuning/jobs", headers=auth(token)).json()["data"]
    ]


def test_bad_requests_are_refused_naming_the_problem_and_store_nothing(owner, team, token, tiny_base_model):
    client = Client()
    before = stored()
    bad = chat_lines(2) + b'{"messages": [{"role": "user", "content": "no answer"}]}\n' + b"not json\n"
    problem = assert_refused(upload(client, token, bad), 400, "line 3", "line 4", param="file")
    assert problem["code"] == "invalid_file"
    assert_refused(upload(client, token, purpose="assistants"), 400, "purpose", "fine-tune", param="purpose")
    assert_refused(upload(client, token, name="train.csv"), 400, ".jsonl", param="file")
    assert_refused(upload(client, token, b""), 400, "empty")
    assert stored() == before

    file = upload(client, token).json()
    before = stored()
    problem = assert_refused(
        create_job(client, token, model="gpt-4o-mini", training_file=file["id"]), 400, "gpt-4o-mini", param="model"
    )
    assert problem["code"] == "model_not_found"
    assert_refused(
        create_job(client, token, model="Tiny Llama", training_file="file-999"), 400, "file-999", param="training_file"
    )
    assert_refused(create_job(client, token, model="Tiny Llama"), 400, "training_file", param="training_file")
    for name, value, words in [
        ("n_epochs", 0, "from 1 to 50"),
        ("n_epochs", 51, "from 1 to 50"),
        ("n_epochs", 2.5, "integer"),
        ("batch_size", 0, "from 1 to 256"),
        ("batch_size", "big", "integer"),
        ("learning_rate_multiplier", 0, "above 0"),
        ("learning_rate_multiplier", 11, "at most 10"),
    ]:
        hyper = {"type": "supervised", "supervised": {"hyperparameters": {name: value}}}
        response = create_job(client, token, model="Tiny Llama", training_file=file["id"], method=hyper)
        assert_refused(response, 400, name, words, param=name)
    response = create_job(client, token, model="Tiny Llama", training_file=file["id"], hyperparameters={"n_epochs": 99})
    assert_refused(response, 400, "n_epochs", param="n_epochs")  # the older top-level form too
    dpo = create_job(client, token, model="Tiny Llama", training_file=file["id"], method={"type": "dpo"})
    assert_refused(dpo, 400, "chat records", "'supervised'", param="method.type")  # DPO trains on preference pairs
    assert_refused(create_job(client, token, model="Tiny Llama", training_file=file["id"], suffix="a:b"), 400, "suffix")
    missing = create_job(client, token, model="Tiny Llama", training_file=file["id"], validation_file="file-999")
    assert_refused(missing, 400, "'file-999' does not exist", param="validation_file")

    # Another team's file: refused as if it did not exist.
    stranger = MembershipFactory(team__slug="lab").user
    theirs = publishing_services.token_create(user=stranger, name="x", scope="train", team=stranger.teams.get())[1]
    problem = assert_refused(
        create_job(client, theirs, model="Tiny Llama", training_file=file["id"]),
        400,
        file["id"],
        "does not exist or you do not have access",
        param="training_file",
    )
    assert stored() == before


def test_a_file_for_an_existing_datanet_waits_for_its_curators(
    owner, team, token, tiny_base_model, django_assert_max_num_queries
):
    client = Client()
    curated = DatanetFactory(team=team, schema="chat", visibility="private", slug="triage")
    file = upload(client, token, **{"metadata[datanet]": "triage"}).json()
    assert file["datanet"] == "triage" and file["datanet_version"] is None
    assert "6 records await moderation in" in file["status_details"]
    upload(client, token, chat_lines(3, start=50))
    with django_assert_max_num_queries(8):  # a page of files in a fixed number of queries
        listed = client.get("/v1/files", headers=auth(token)).json()["data"]
    assert [f["status_details"] for f in listed] == [None, file["status_details"]]
    assert set(Record.objects.filter(datanet=curated).values_list("status", flat=True)) == {"pending"}
    refused = create_job(Client(), token, model="Tiny Llama", training_file=file["id"])
    assert_refused(refused, 400, "await moderation", param="training_file")
    elsewhere = DatanetFactory(visibility="private", slug="elsewhere")  # another team's
    assert_refused(upload(client, token, **{"metadata[datanet]": "elsewhere"}), 400, "elsewhere", param="metadata")
    assert not Upload.objects.filter(datanet=elsewhere).exists()


@pytest.fixture
def job_of(tiny_base_model):
    def make(secret):
        client = Client()
        file = upload(client, secret).json()
        return file, create_job(client, secret, model="Tiny Llama", training_file=file["id"]).json()

    return make


def test_token_and_role_matrix(owner, team, token, job_of):
    """Reads take any scope, writes the train scope; another team's objects get the missing ones' 404."""
    client = Client()
    file, job = job_of(token)
    read = publishing_services.token_create(user=owner, name="r", scope="read", team=team)[1]
    download = publishing_services.token_create(user=owner, name="d", scope="download")[1]
    revoked_row, revoked = publishing_services.token_create(user=owner, name="old", scope="train", team=team)
    publishing_services.token_revoke(token=revoked_row, by=owner)
    other_team = MembershipFactory(user=owner, team__slug="other").team  # same person, another team's token
    elsewhere = publishing_services.token_create(user=owner, name="o", scope="train", team=other_team)[1]
    stranger = publishing_services.token_create(user=UserFactory(), name="s", scope="train")[1]

    reads = [
        f"/v1/files/{file['id']}",
        f"/v1/files/{file['id']}/content",
        "/v1/files",
        f"/v1/fine_tuning/jobs/{job['id']}",
        "/v1/fine_tuning/jobs",
        f"/v1/fine_tuning/jobs/{job['id']}/events",
        f"/v1/fine_tuning/jobs/{job['id']}/checkpoints",
    ]
    for secret in (read, download, token):
        assert all(client.get(url, headers=auth(secret)).status_code == 200 for url in reads)
    for url in reads:
        assert_refused(client.get(url, headers=auth(revoked)), 401, "valid API token")
        assert_refused(client.get(url), 401)

    writes = [
        lambda s: upload(client, s),
        lambda s: create_job(client, s, model="Tiny Llama", training_file=file["id"]),
        lambda s: client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=auth(s)),
        lambda s: client.delete(f"/v1/files/{file['id']}", headers=auth(s)),
    ]
    before = stored()
    for secret in (read, download):
        for write in writes:
            assert_refused(write(secret), 403, "train scope")
    for write in writes:
        assert_refused(write(revoked), 401)
    assert stored() == before

    for secret in (elsewhere, stranger):  # hidden: the same 404 as a missing one
        for url, missing in [
            (f"/v1/files/{file['id']}", "/v1/files/file-999999"),
            (f"/v1/files/{file['id']}/content", "/v1/files/file-999999/content"),
            (f"/v1/fine_tuning/jobs/{job['id']}", "/v1/fine_tuning/jobs/ftjob-999999"),
            (f"/v1/fine_tuning/jobs/{job['id']}/events", "/v1/fine_tuning/jobs/ftjob-999999/events"),
        ]:
            hidden, absent = client.get(url, headers=auth(secret)), client.get(missing, headers=auth(secret))
            assert hidden.status_code == absent.status_code == 404
            assert hidden.json()["error"]["code"] == absent.json()["error"]["code"] == "not_found"
        assert client.get("/v1/files/file-" + "9" * 40, headers=auth(secret)).status_code == 404
        assert client.get("/v1/files", headers=auth(secret)).json()["data"] == []
        assert client.get("/v1/fine_tuning/jobs", headers=auth(secret)).json()["data"] == []
        assert_refused(client.delete(f"/v1/files/{file['id']}", headers=auth(secret)), 404)
        assert_refused(client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=auth(secret)), 404)
    assert stored() == before

    # A team member who did not upload the file reads it, but only its uploader or a team admin deletes it.
    member = MembershipFactory(team=team, role="member").user
    mate = publishing_services.token_create(user=member, name="m", scope="train", team=team)[1]
    assert client.get(f"/v1/files/{file['id']}", headers=auth(mate)).status_code == 200
    assert_refused(client.delete(f"/v1/files/{file['id']}", headers=auth(mate)), 403, "uploader")
    assert client.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=auth(mate)).status_code == 404  # jobs: their owner's
    admin = MembershipFactory(team=team, role="admin").user
    boss = publishing_services.token_create(user=admin, name="a", scope="train", team=team)[1]
    assert client.delete(f"/v1/files/{file['id']}", headers=auth(boss)).json()["deleted"] is True


def test_openapi_documents_the_new_endpoints(db):
    paths = Client().get("/v1/openapi.json").json()["paths"]
    assert {
        "/v1/files",
        "/v1/files/{file_id}",
        "/v1/files/{file_id}/content",
        "/v1/fine_tuning/jobs",
        "/v1/fine_tuning/jobs/{job_id}/cancel",
        "/v1/fine_tuning/jobs/{job_id}/events",
        "/v1/fine_tuning/jobs/{job_id}/checkpoints",
    } <= set(paths)
