"""What the job page and the job list tell a model builder: the phase before the first step, the loss
curve with its axes and smoothed line, settings as a table, names that tell jobs apart, and who is who."""

import re

import pytest
from django.urls import reverse

from accounts.contributors import contributor_pseudonym
from datanets.models import Record
from tests.factories import UserFactory
from training import charts, jobs
from training.models import FineTuneJob


@pytest.fixture
def make_job(tiny_base_model, trainer_user, version, django_capture_on_commit_callbacks):
    def make(**kwargs):
        with django_capture_on_commit_callbacks(execute=False):
            return jobs.job_create(
                owner=trainer_user,
                base_model=tiny_base_model,
                versions=[version],
                **{"name": "", "method": "qlora", "preset": "quick", **kwargs},
            )

    return make


def page_of(client, job) -> str:
    return client.get(reverse("job_detail", args=[job.pk])).content.decode()


def test_launching_says_queued_once_and_then_what_the_run_is_doing(
    client, tiny_base_model, trainer_user, version, django_capture_on_commit_callbacks
):
    client.force_login(trainer_user)
    step = lambda n: reverse("wizard", args=[n])  # noqa: E731
    client.post(step(1), {"versions": [version.pk], "go": "next"})
    client.post(step(2), {"base_model": tiny_base_model.pk, "go": "next"})
    client.post(step(3), {"method": "qlora", "preset": "quick", "go": "next"})
    with django_capture_on_commit_callbacks(execute=False):
        launched = client.post(step(4), {"name": "", "go": "next"}, follow=True).content.decode()
    assert 'class="messages"' not in launched  # no banner that would stay while the live part moves on
    assert "Waiting for a training worker" in launched

    job = FineTuneJob.objects.get()
    job.status, job.worker, job.metrics = "running", "embedded@vm", {"phase": "loading", "train": [], "eval": []}
    job.save()
    live = client.get(reverse("job_detail", args=[job.pk]) + "?poll=1", HTTP_HX_REQUEST="true").content.decode()
    assert "Loading the model and tokenising the data" in live and "embedded@vm</p>" in live.replace("\n", "")
    assert "Queued" not in live and "Waiting for a training worker" not in live


def test_the_worker_records_the_phase_and_logs_it_before_the_first_step(make_job):
    job = make_job()
    job.base_model.local_path = "/nonexistent/model"
    job.base_model.save()
    assert jobs.job_run(job_id=job.pk, worker="here") == "failed"
    job.refresh_from_db()
    assert job.metrics["phase"] in ("preparing", "loading")
    assert any(line.endswith("Preparing the training data…") for line in job.logs)


def test_the_loss_curve_has_step_axes_and_a_smoothed_line():
    assert charts.smooth([4.0, 2.0]) == [4.0, pytest.approx((0.8 * 0.2 * 4 + 0.2 * 2) / (1 - 0.64))]
    assert charts.nice_ticks(0, 137) == [0, 50, 100]
    noisy = {
        "train": [{"step": s, "loss": 3 - s / 100 + (0.5 if s % 2 else -0.5)} for s in range(1, 201)],
        "eval": [{"step": 100, "loss": 2.1}, {"step": 200, "loss": 1.2}],
    }
    chart = charts.loss_chart(noisy)
    assert [t["label"] for t in chart["x_ticks"]] == ["0", "50", "100", "150", "200"]
    assert len(chart["y_ticks"]) >= 3 and chart["smoothed"] != chart["train"]
    smoothed = [float(p.split(",")[1]) for p in chart["smoothed"].split()]
    raw = [float(p.split(",")[1]) for p in chart["train"].split()]
    wiggle = lambda ys: sum(abs(a - b) for a, b in zip(ys, ys[1:], strict=False))  # noqa: E731
    assert wiggle(smoothed) < wiggle(raw) / 5


def test_the_job_page_draws_axes_and_shows_settings_as_a_table(client, make_job, trainer_user):
    job = make_job(method="auto")
    job.metrics = {
        "train": [{"step": s, "loss": 3 / s, "lr": 1e-3, "tokens_per_s": 10} for s in range(1, 41)],
        "eval": [],
        "phase": "training",
    }
    job.save()
    client.force_login(trainer_user)
    page = page_of(client, job)
    assert 'class="smoothed-loss"' in page and 'class="train-loss"' in page
    assert re.findall(r'class="label tick x-tick"[^>]*>(\d+)<', page) == ["0", "10", "20", "30", "40"]
    assert "{'" not in page and '<table id="settings">' in page
    assert re.search(r"<th scope=\"row\">Learning-rate schedule</th><td>cosine</td>", page)
    assert re.search(r"<th scope=\"row\">LoRA rank</th><td>8</td>", page)
    assert "Automatic (LoRA or QLoRA" in page and "preset Quick" in page

    job.status, job.step, job.total_steps = "succeeded", 145, 300  # early stopping ended it before the plan
    job.save()
    assert 'value="100" aria-label="Training progress"' in page_of(client, job)


def test_jobs_get_names_apart_and_the_list_shows_method_preset_and_data(
    client, make_job, trainer_user, django_assert_max_num_queries
):
    first, second = make_job(), make_job(preset="standard", method="lora")
    assert first.name != second.name
    assert (first.name, second.name) == ("Tiny Llama on Codes v1, Quick #1", "Tiny Llama on Codes v1, Standard #2")
    make_job()
    client.force_login(trainer_user)
    with django_assert_max_num_queries(8):
        page = client.get(reverse("job_list")).content.decode()
    assert '<td class="job-method">QLoRA</td><td class="job-preset">Quick</td>' in page
    assert '<td class="job-method">LoRA</td><td class="job-preset">Standard</td>' in page
    assert page.count('<td class="job-data">Codes v1</td>') == 3


def test_influence_names_contributors_to_staff_and_curators_and_splits_their_records(
    client, make_job, trainer_user, version
):
    author = Record.objects.filter(datanet=version.datanet).first().contributor
    job = make_job()
    row = {"contributor": str(author.pk), "records": 35, "score": 0.5, "share": 1.0, "share_ci": [0.9, 1.0]}
    job.influence = {
        "default_method": "datainf",
        "methods": {"datainf": {"parameters": {"projection": "none"}, "seconds": 1.0, "contributors": [row]}},
    }
    job.evaluation = {"train_examples": 35, "eval_examples": 5}
    job.save()
    name = f'class="contributor-name">{author.username}</span>'

    client.force_login(trainer_user)  # the owner: a pseudonym only
    page = page_of(client, job)
    assert contributor_pseudonym(author.pk) in page and name not in page
    assert '<td class="record-split">40 <span class="muted">(35 + 5)</span></td>' in page
    assert "Records (training + held out)" in page and "35 training and 5 held out" in page

    curator = UserFactory()
    version.datanet.curators.add(curator)
    staff = UserFactory(is_staff=True)
    job.owner = curator  # a curator sees the page of a job they own
    job.save()
    client.force_login(curator)
    assert name in page_of(client, job)
    client.force_login(staff)
    assert name in page_of(client, job)
