"""The wizard walked with the test client, and who may see a job."""

import re

import pytest
from django.urls import reverse

from tests.factories import UserFactory, make_version
from training.models import FineTuneJob


def test_wizard_keeps_choices_back_and_forward_and_launches(
    client, tiny_base_model, trainer_user, version, django_capture_on_commit_callbacks
):
    other = make_version(UserFactory(), name="Other codes")
    other.datanet.license = "CC-BY-NC-4.0"
    other.datanet.save()
    type(other).objects.filter(pk=other.pk).update(license="CC-BY-NC-4.0")
    client.force_login(trainer_user)
    step = lambda n: reverse("wizard", args=[n])  # noqa: E731

    assert client.get(step(3))["Location"] == step(1)  # no skipping ahead
    response = client.post(step(1), {"go": "next"})
    assert "Pick at least one Datanet" in response.content.decode()
    assert client.post(step(1), {"versions": [version.pk, other.pk], "go": "next"})["Location"] == step(2)
    assert client.post(step(2), {"base_model": tiny_base_model.pk, "go": "next"})["Location"] == step(3)
    bad = client.post(step(3), {"method": "qlora", "preset": "quick", "learning_rate": "0.5", "go": "next"})
    assert "Ensure this value is less than or equal to 0.1" in bad.content.decode()
    good = {
        "method": "lora",
        "preset": "standard",
        "lora_r": "4",
        "max_seq_length": "64",
        "influence_methods": "tracincp",
        "go": "next",
    }
    assert client.post(step(3), good)["Location"] == step(4)

    # Back keeps what was chosen.
    assert client.post(step(4), {"go": "back"})["Location"] == step(3)
    page = client.get(step(3)).content.decode()
    assert re.search(r'value="lora"[^>]*checked', page)
    assert 'name="lora_r" value="4"' in page
    assert re.search(r'value="tracincp"[^>]*selected', page)
    assert client.get(step(1)).content.decode().count("checked") == 2

    review = client.get(step(4)).content.decode()
    assert "Peak memory" in review and "non-commercial" in review
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(step(4), {"name": "Codes expert", "go": "next"})
    job = FineTuneJob.objects.get()
    assert response["Location"] == reverse("job_detail", args=[job.pk])
    assert (job.name, job.method, job.preset, job.config["lora_r"], job.config["max_seq_length"]) == (
        "Codes expert",
        "lora",
        "standard",
        4,
        64,
    )
    assert job.config["influence_methods"] == ["tracincp"]
    assert set(job.datanet_versions.all()) == {version, other}
    assert job.estimate["peak_memory_bytes"] > 0
    assert "wizard" not in client.session


@pytest.mark.parametrize("role, status", [("owner", 200), ("other", 404), ("staff", 200)])
def test_who_sees_a_job(
    client, tiny_base_model, trainer_user, version, role, status, django_capture_on_commit_callbacks
):
    from training import jobs

    with django_capture_on_commit_callbacks(execute=False):
        job = jobs.job_create(
            owner=trainer_user, name="x", base_model=tiny_base_model, versions=[version], method="qlora", preset="quick"
        )
    viewer = {"owner": trainer_user, "other": UserFactory(), "staff": UserFactory(is_staff=True)}[role]
    client.force_login(viewer)
    assert client.get(reverse("job_detail", args=[job.pk])).status_code == status
    assert client.post(reverse("job_cancel", args=[job.pk])).status_code in ((302,) if status == 200 else (404,))
    job.refresh_from_db()
    assert (job.status == "cancelled") is (status == 200)


def _field(page: str, name: str) -> str:
    return re.search(rf'<(?:input|select)[^>]*name="{name}"[^>]*>', page).group(0)


def test_the_wizard_preselects_what_it_can_and_shows_the_presets_values(client, tiny_base_model, trainer_user, version):
    client.force_login(trainer_user)
    step = lambda n: reverse("wizard", args=[n])  # noqa: E731
    client.post(step(1), {"versions": [version.pk], "go": "next"})
    models = client.get(step(2)).content.decode()
    assert re.search(rf'value="{tiny_base_model.pk}"[^>]*checked', models)  # the only base model
    assert client.post(step(2), {"base_model": tiny_base_model.pk, "go": "next"})["Location"] == step(3)

    page = client.get(step(3)).content.decode()
    assert re.search(r'value="standard"[^>]*checked', page) and "Standard (default)" in page
    assert 'placeholder="16"' in _field(page, "lora_r")  # the standard preset's rank
    assert 'placeholder="24.0"' in _field(page, "epochs")  # sized to 40 records: the preset's most
    assert 'placeholder="0.05"' in _field(page, "eval_fraction")  # the trainer's default
    assert "the preset&#x27;s (cosine)" in page or "the preset's (cosine)" in page
    assert "Learning-rate schedule" in page and re.search(r'"quick": \{[^}]*"lora_r": 8', page)  # for the script
    assert client.post(step(3), {"method": "qlora", "preset": "standard", "go": "next"})["Location"] == step(4)

    review = client.get(step(4)).content.decode()
    assert "QLoRA, preset Standard" in review and "QLORA" not in review
    assert review.index('name="name"') < review.index('id="estimate"')  # the name stands clear of the table
    assert 'placeholder="Tiny Llama on Codes v1, Standard #1"' in _field(review, "name")


def test_train_on_this_version_opens_the_wizard_with_it_chosen(client, tiny_base_model, trainer_user, version):
    from datanets import services as datanet_services
    from datanets.models import Record

    datanet_services.record_create(
        datanet=version.datanet,
        contributor=trainer_user,
        value={"instruction": "What does code 99 mean?", "output": "Red."},
    )
    Record.objects.filter(datanet=version.datanet).update(status="approved")
    newer = datanet_services.version_publish(datanet=version.datanet, by=UserFactory(is_staff=True))
    client.force_login(trainer_user)
    page = client.get(reverse("version_detail", args=[version.datanet.slug, version.number])).content.decode()
    link = re.search(r'id="train-on-version" href="([^"]+)"', page).group(1)
    assert link == f"{reverse('wizard_start')}?version={version.pk}"

    wizard = client.get(link).content.decode()  # the older version is offered beside the latest, and chosen
    assert re.search(rf'value="{version.pk}"[^>]*checked', wizard)
    assert f'value="{newer.pk}"' in wizard and not re.search(rf'value="{newer.pk}"[^>]*checked', wizard)
    assert client.post(link, {"versions": [version.pk], "go": "next"})["Location"] == reverse("wizard", args=[2])
    assert client.session["wizard"]["versions"] == [version.pk]
    assert f'value="{version.pk}"' in client.get(reverse("wizard", args=[1])).content.decode()


def test_a_run_on_several_devices_and_nodes_from_the_wizard(
    client, tiny_base_model, trainer_user, version, django_capture_on_commit_callbacks
):
    client.force_login(trainer_user)
    step = lambda n: reverse("wizard", args=[n])  # noqa: E731
    client.post(step(1), {"versions": [version.pk], "go": "next"})
    client.post(step(2), {"base_model": tiny_base_model.pk, "go": "next"})
    page = client.get(step(3)).content.decode()
    assert 'placeholder="1"' in _field(page, "devices") and 'placeholder="1"' in _field(page, "nodes")
    chosen = {"method": "lora", "preset": "standard", "devices": "2", "nodes": "2", "go": "next"}
    too_small = client.post(step(3), {**chosen, "batch_size": "3"}).content.decode()
    assert "devices times nodes at most the batch size" in too_small
    four_bit = client.post(step(3), {**chosen, "method": "qlora", "parallel": "fsdp"}).content.decode()
    assert "4-bit weights are not sharded here" in four_bit
    assert client.post(step(3), {**chosen, "parallel": "fsdp"})["Location"] == step(4)

    review = client.get(step(4)).content.decode()
    assert "batch 4 × 1" in review and "on 2 devices together on each of 2 nodes" in review  # the preset's 1, raised
    assert "the base model sharded over them (FSDP)" in review
    assert "The time is one device&#x27;s" in review or "The time is one device's" in review
    with django_capture_on_commit_callbacks(execute=False):
        client.post(step(4), {"go": "next"})
    job = FineTuneJob.objects.get()
    assert (job.devices, job.nodes, job.config["batch_size"], job.config["parallel"]) == (2, 2, 4, "fsdp")
