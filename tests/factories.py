"""factory_boy factories for the tests."""

import factory
from django.contrib.auth import get_user_model

from accounts.models import Membership, Team
from datanets import services as datanet_services
from datanets.models import Record
from training.models import BaseModel

PASSWORD = "correct-horse-battery-staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def save_password(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team

    name = factory.Sequence(lambda n: f"Team {n}")
    slug = factory.Sequence(lambda n: f"team-{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    team = factory.SubFactory(TeamFactory)
    user = factory.SubFactory(UserFactory)
    role = Membership.Role.MEMBER


class BaseModelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = BaseModel

    name = factory.Sequence(lambda n: f"model-{n}")
    slug = factory.Sequence(lambda n: f"model-{n}")
    license = "apache-2.0"
    source = "/nonexistent"
    status = BaseModel.Status.READY
    parameter_count = 1000
    context_length = 512


class DatanetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "datanets.Datanet"

    name = factory.Sequence(lambda n: f"Datanet {n}")
    slug = factory.Sequence(lambda n: f"datanet-{n}")
    team = factory.SubFactory(TeamFactory)
    created_by = factory.SubFactory(UserFactory)
    schema = "instruction"
    license = "CC-BY-4.0"
    visibility = "public"


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
