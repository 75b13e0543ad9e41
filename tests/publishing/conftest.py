import pytest

from publishing import services
from tests.factories import MembershipFactory, make_version
from training import jobs


def run_job(owner, base_model, version, capture_on_commit, name="Codes", **overrides):
    """A real fine-tune of the tiny model, run in this process (the worker path is tested in training)."""
    with capture_on_commit(execute=False):
        job = jobs.job_create(
            owner=owner,
            name=name,
            base_model=base_model,
            versions=[version],
            method="qlora",
            preset="quick",
            overrides={"learning_rate": 0.005, "epochs": 2, "max_seq_length": 64, **overrides},
        )
    result = jobs.job_run(job_id=job.pk, worker="test")
    job.refresh_from_db()
    assert result == "succeeded", (job.error, job.logs[-3:])
    return job


@pytest.fixture
def succeeded_job(transactional_db, tiny_base_model, trainer_user, django_capture_on_commit_callbacks):
    """Transactional, as on a worker: the job's heartbeat thread writes on its own connection."""
    return run_job(trainer_user, tiny_base_model, make_version(trainer_user, n=24), django_capture_on_commit_callbacks)


@pytest.fixture
def team(trainer_user):
    return MembershipFactory(user=trainer_user, role="owner").team


@pytest.fixture
def adapter(succeeded_job, trainer_user, team):
    return services.adapter_publish(
        job=succeeded_job,
        by=trainer_user,
        team=team,
        name="Codes Expert",
        description="Knows what the codes mean.",
        visibility="team",
        domain="codes",
    )
