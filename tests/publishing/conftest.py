import pytest

from publishing import services
from tests.factories import MembershipFactory
from tests.training.conftest import make_version, tiny_base_model, trainer_user  # noqa: F401 - fixtures
from training import jobs


@pytest.fixture
def succeeded_job(transactional_db, tiny_base_model, trainer_user, django_capture_on_commit_callbacks):  # noqa: F811
    """A real fine-tune of the tiny model, run in this process (the worker path is tested in training).
    Transactional, as on a worker: the job's heartbeat thread writes on its own connection."""
    version = make_version(trainer_user, n=24)
    with django_capture_on_commit_callbacks(execute=False):
        job = jobs.job_create(owner=trainer_user, name="Codes", base_model=tiny_base_model, versions=[version],
                              method="qlora", preset="quick",
                              overrides={"learning_rate": 0.005, "epochs": 2, "max_seq_length": 64})  # fmt: skip
    result = jobs.job_run(job_id=job.pk, worker="test")
    job.refresh_from_db()
    assert result == "succeeded", (job.error, job.logs[-3:])
    return job


@pytest.fixture
def team(trainer_user):  # noqa: F811
    return MembershipFactory(user=trainer_user, role="owner").team


@pytest.fixture
def adapter(succeeded_job, trainer_user, team):  # noqa: F811
    return services.adapter_publish(job=succeeded_job, by=trainer_user, team=team, name="Codes Expert",
                                    description="Knows what the codes mean.", visibility="team", domain="codes")  # fmt: skip
