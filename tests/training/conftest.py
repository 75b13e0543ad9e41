import pytest

from datanets import services as datanet_services
from datanets.models import Record
from tests.factories import DatanetFactory, UserFactory
from training import services
from training.models import BaseModel


@pytest.fixture
def tiny_base_model(db, tiny_model_dir) -> BaseModel:
    model = services.base_model_register(name="Tiny Llama", source=str(tiny_model_dir), license="apache-2.0")
    return services.base_model_import(base_model=model)


@pytest.fixture
def trainer_user(db):
    return UserFactory(username="builder")


def make_version(owner, n=40, name="Codes"):
    """A published Datanet version of n invented facts."""
    datanet = DatanetFactory(name=name, visibility="public", created_by=owner)
    author = UserFactory()
    for i in range(n):
        datanet_services.record_create(
            datanet=datanet,
            contributor=author,
            value={"instruction": f"What does code {i} mean?", "output": f"Code {i} means the colour blue."},
        )
    Record.objects.filter(datanet=datanet).update(status="approved")
    return datanet_services.version_publish(datanet=datanet, by=UserFactory(is_staff=True))


@pytest.fixture
def version(trainer_user):
    return make_version(trainer_user)
