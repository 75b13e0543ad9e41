"""Influence tables name contributors to staff and the Datanet's curators; everyone else sees pseudonyms."""

from django.urls import reverse

from accounts.contributors import contributor_pseudonym
from datanets.models import Record
from tests.factories import MembershipFactory, UserFactory


def test_staff_and_curators_see_who_is_who_others_see_pseudonyms(client, adapter, trainer_user, team):
    author = Record.objects.filter(adapter_uses__adapter=adapter).first().contributor
    pseudonym = contributor_pseudonym(author.pk)
    url = reverse("adapter_detail", args=[adapter.slug, adapter.version])

    client.force_login(trainer_user)  # in the adapter's team, no curator of its Datanet
    page = client.get(url).content.decode()
    assert pseudonym in page and author.username not in page

    curator = UserFactory()
    MembershipFactory(team=team, user=curator, role="member")
    adapter.datanet_versions.get().datanet.curators.add(curator)
    client.force_login(curator)
    page = client.get(url).content.decode()
    assert f'class="contributor-name">{author.username}</span>' in page and pseudonym in page

    client.force_login(UserFactory(is_staff=True))
    assert f'class="contributor-name">{author.username}</span>' in client.get(url).content.decode()
