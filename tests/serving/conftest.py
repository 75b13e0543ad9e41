import pytest

from datanets import services as datanet_services
from datanets.models import Record
from publishing import services
from tests.factories import DatanetFactory, MembershipFactory, UserFactory
from training import jobs


def make_version(owner):
    """Two contributors: alice states what codes mean, bob names fruits."""
    datanet = DatanetFactory(name="Codes and fruits", visibility="public", created_by=owner)
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    for i in range(12):
        datanet_services.record_create(
            datanet=datanet,
            contributor=alice,
            value={"instruction": f"What does code {i} mean?", "output": f"Code {i} means the colour blue."},
        )
        datanet_services.record_create(
            datanet=datanet,
            contributor=bob,
            value={"instruction": f"Name fruit {i}.", "output": f"Fruit {i} is a ripe yellow banana."},
        )
    Record.objects.filter(datanet=datanet).update(status="approved")
    return datanet_services.version_publish(datanet=datanet, by=UserFactory(is_staff=True))


def train(owner, base_model, epochs: int):
    version = make_version(owner)
    job = jobs.job_create(
        owner=owner,
        name="Codes",
        base_model=base_model,
        versions=[version],
        method="lora",
        preset="quick",
        overrides={"learning_rate": 0.01, "epochs": epochs, "max_seq_length": 64, "batch_size": 4},
    )
    assert jobs.job_run(job_id=job.pk, worker="test") == "succeeded"
    job.refresh_from_db()
    return job


@pytest.fixture
def memorising_job(transactional_db, tiny_base_model, trainer_user, django_capture_on_commit_callbacks):
    """A real LoRA fine-tune of the tiny model, trained long enough to repeat its records verbatim."""
    with django_capture_on_commit_callbacks(execute=False):
        return train(trainer_user, tiny_base_model, epochs=40)


@pytest.fixture
def quick_adapter(transactional_db, tiny_base_model, trainer_user, team, django_capture_on_commit_callbacks):
    """One epoch: enough for tests that never ask it anything."""
    with django_capture_on_commit_callbacks(execute=False):
        job = train(trainer_user, tiny_base_model, epochs=1)
    return services.adapter_publish(job=job, by=trainer_user, team=team, name="Codes Expert")


@pytest.fixture
def team(trainer_user):
    return MembershipFactory(user=trainer_user, role="owner").team


@pytest.fixture
def chat_adapter(memorising_job, trainer_user, team):
    return services.adapter_publish(
        job=memorising_job,
        by=trainer_user,
        team=team,
        name="Codes Expert",
        description="Knows what the codes mean.",
        visibility="team",
    )
