"""DPO through /v1/: OpenAI's preference file format becomes a preference Datanet, `method.type: dpo`
a DPO FineTuneJob that trains (in this process; the worker path is tested in training)."""

import json

from django.test import Client

from datanets.models import Record
from ftapi.models import ApiFile
from training import jobs
from training.models import FineTuneJob

from .conftest import chat_lines
from .test_bad_input import assert_refused, auth, create_job, upload


def dpo_lines(n: int) -> bytes:
    """n pairs in OpenAI's DPO format: the right meaning of a made-up code preferred to a wrong one."""
    return b"".join(
        json.dumps(
            {
                "input": {"messages": [{"role": "user", "content": f"What does code {i} mean?"}]},
                "preferred_output": [{"role": "assistant", "content": f"Code {i} means the colour blue."}],
                "non_preferred_output": [{"role": "assistant", "content": f"Code {i} means nothing."}],
            }
        ).encode()
        + b"\n"
        for i in range(n)
    )


def test_an_openai_dpo_file_trains_a_dpo_job(owner, team, token, tiny_base_model):
    client = Client()
    file = upload(client, token, dpo_lines(8), name="pairs.jsonl").json()
    row = ApiFile.objects.get()
    assert row.datanet.schema == "preference" and row.version.record_count == 8
    record = Record.objects.get(datanet=row.datanet, line_number=1)
    assert record.content == {  # stored as the preference schema holds it: the same hash as our own format
        "messages": [{"role": "user", "content": "What does code 0 mean?"}],
        "chosen": "Code 0 means the colour blue.",
        "rejected": "Code 0 means nothing.",
    }

    supervised = create_job(client, token, model="Tiny Llama", training_file=file["id"])
    assert_refused(supervised, 400, "preference pairs", "'dpo'", param="method.type")
    beta_zero = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}
    assert_refused(
        create_job(client, token, model="Tiny Llama", training_file=file["id"], method=beta_zero), 400, "beta"
    )
    assert FineTuneJob.objects.count() == 0

    method = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 1, "batch_size": 4}}}
    created = create_job(client, token, model="Tiny Llama", training_file=file["id"], method=method)
    assert created.status_code == 200, created.content
    job = created.json()
    assert job["method"]["type"] == "dpo"
    assert job["method"]["dpo"]["hyperparameters"] == {
        "n_epochs": 1,
        "batch_size": 4,
        "learning_rate_multiplier": 1,
        "beta": 0.2,
    }
    run = FineTuneJob.objects.get()
    assert (run.config["objective"], run.config["beta"]) == ("dpo", 0.2)
    assert jobs.job_run(job_id=run.pk, worker="test") == "succeeded"
    done = client.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=auth(token)).json()
    assert done["status"] == "succeeded" and done["fine_tuned_model"]

    chats = upload(client, token, chat_lines(4), name="chats.jsonl").json()
    on_chats = create_job(client, token, model="Tiny Llama", training_file=chats["id"], method=method)
    assert_refused(on_chats, 400, "chat records", param="method.type")


def test_a_bad_dpo_line_is_named_and_nothing_is_stored(owner, team, token):
    lines = dpo_lines(3).splitlines()
    wrong = json.loads(lines[1])
    wrong["preferred_output"].append({"role": "assistant", "content": "A second answer."})
    content = b"\n".join([lines[0], json.dumps(wrong).encode(), lines[2]]) + b"\n"
    response = upload(Client(), token, content, name="pairs.jsonl")
    assert_refused(response, 400, "line 2", "'preferred_output' must be a list of one assistant message")
    assert ApiFile.objects.count() == Record.objects.count() == 0


def test_a_validation_file_is_the_held_out_set_and_every_training_record_trains(owner, team, token, tiny_base_model):
    client = Client()
    train = upload(client, token, chat_lines(20), name="train.jsonl").json()
    held = upload(client, token, chat_lines(6, start=100), name="held.jsonl").json()
    created = create_job(client, token, model="Tiny Llama", training_file=train["id"], validation_file=held["id"])
    assert created.status_code == 200, created.content
    assert created.json()["validation_file"] == held["id"]
    run = FineTuneJob.objects.get()
    assert run.validation_version == ApiFile.objects.get(filename="held.jsonl").version
    run.config = {**run.config, "epochs": 1, "max_seq_length": 64}
    run.save(update_fields=["config"])
    assert jobs.job_run(job_id=run.pk, worker="test") == "succeeded"
    run.refresh_from_db()
    assert (run.evaluation["train_examples"], run.evaluation["eval_examples"]) == (20, 6)
    pairs = upload(client, token, dpo_lines(4), name="pairs.jsonl").json()
    mixed = create_job(client, token, model="Tiny Llama", training_file=train["id"], validation_file=pairs["id"])
    assert_refused(mixed, 400, "preference records", param="validation_file")
