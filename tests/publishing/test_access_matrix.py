"""Roles x adapter pages, browser downloads and API endpoints: nothing private leaks."""

import pytest
from django.test import Client
from django.urls import reverse

from modelfactory.exceptions import ApplicationError
from publishing import services
from publishing.models import Adapter
from tests.factories import MembershipFactory, UserFactory

ROLES = ["anonymous", "other team", "team member", "team admin", "staff"]


def as_role(role, adapter):
    client = Client()
    if role == "anonymous":
        return client, None
    user = UserFactory(is_staff=role == "staff")
    if role in ("team member", "team admin"):
        MembershipFactory(team=adapter.team, user=user, role="member" if role == "team member" else "admin")
    elif role == "other team":
        MembershipFactory(user=user, role="owner")
    client.force_login(user)
    return client, user


@pytest.mark.parametrize("visibility", ["team", "public"])
def test_matrix(adapter, visibility):
    Adapter.objects.filter(pk=adapter.pk).update(visibility=visibility)
    adapter.refresh_from_db()
    page = reverse("adapter_detail", args=[adapter.slug, adapter.version])
    download = reverse("adapter_download", args=[adapter.slug, adapter.version])
    api_detail = f"/api/v1/adapters/{adapter.slug}"
    api_download = f"/api/v1/adapters/{adapter.slug}/versions/{adapter.version}/download"
    for role in ROLES:
        client, user = as_role(role, adapter)
        sees = visibility == "public" or role in ("team member", "team admin", "staff")
        assert client.get(page).status_code == (200 if sees else 404), role
        expected_download = 302 if user is None else (200 if sees else 404)  # anonymous: log in first
        assert client.get(download).status_code == expected_download, role
        rewards = client.get(reverse("adapter_rewards", args=[adapter.slug, adapter.version]) + "?amount=10")
        assert rewards.status_code == (302 if user is None else 200 if role == "staff" else 404), role
        listed = adapter.name in client.get(reverse("adapter_list")).content.decode()
        assert listed is sees, role
        if user is None:
            assert client.get(api_detail).status_code == 401
            continue
        _, secret = services.token_create(user=user, name="t", scope="download")
        headers = {"Authorization": f"Bearer {secret}"}
        assert client.get(api_detail, headers=headers).status_code == (200 if sees else 404), role
        assert client.get(api_download, headers=headers).status_code == (200 if sees else 404), role
        names = [a["slug"] for a in client.get("/api/v1/adapters", headers=headers).json()["items"]]
        assert (adapter.slug in names) is sees, role


def test_a_team_token_sees_only_its_team_and_public(adapter):
    member = MembershipFactory(team=adapter.team, role="member").user
    elsewhere = MembershipFactory(user=member, role="member").team
    _, secret = services.token_create(user=member, name="other team", scope="read", team=elsewhere)
    client = Client()
    response = client.get(f"/api/v1/adapters/{adapter.slug}", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 404  # the user may, but this token is for another team
    with pytest.raises(ApplicationError, match="be in that team"):
        services.token_create(user=UserFactory(), name="x", scope="read", team=adapter.team)


def test_tokens_page_shows_the_secret_once(client, trainer_user):
    client.force_login(trainer_user)
    response = client.post(reverse("tokens"), {"name": "laptop", "scope": "download"})
    body = response.content.decode()
    assert "not shown again" in body
    secret = body.split('id="new-token">')[1].split("<")[0]
    assert secret.startswith("mf_") and services.token_authenticate(secret) is not None
    assert secret not in client.get(reverse("tokens")).content.decode()


def test_api_rate_limit_answers_429(client, trainer_user, settings):
    settings.API_RATE_LIMIT = "3/d"  # a window that does not turn mid-test
    _, secret = services.token_create(user=trainer_user, name="busy", scope="read")
    codes = [
        client.get("/api/v1/datanets", headers={"Authorization": f"Bearer {secret}"}).status_code for _ in range(5)
    ]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]


PUBLISHERS = {  # who tries to publish the builder's job under a team -> whether they may
    "job owner, team member": False,
    "job owner, team admin": True,
    "job owner, team owner": True,
    "team owner, not the job's owner": False,
    "job owner, not in the team": False,
    "staff": True,
}


def test_publishing_is_for_the_team_owners_and_admins(succeeded_job, trainer_user):
    """The matrix on one trained job (a job may be published under several teams): each row a team of its own."""
    from tests.factories import TeamFactory

    for publisher, allowed in PUBLISHERS.items():
        team = TeamFactory()
        by = UserFactory(is_staff=True) if publisher == "staff" else trainer_user
        if publisher.startswith("job owner, team "):
            MembershipFactory(team=team, user=trainer_user, role=publisher.rsplit(" ", 1)[1])
        elif publisher == "team owner, not the job's owner":
            by = MembershipFactory(team=team, role="owner").user
            MembershipFactory(team=team, user=trainer_user, role="member")
        if allowed:
            adapter = services.adapter_publish(job=succeeded_job, by=by, team=team, name=f"Codes {publisher}")
            assert adapter.team == team, publisher
        else:
            with pytest.raises(ApplicationError, match="owner or admin of the team"):
                services.adapter_publish(job=succeeded_job, by=by, team=team, name=f"Codes {publisher}")
            assert not Adapter.objects.filter(team=team).exists(), publisher
    assert Adapter.objects.count() == sum(PUBLISHERS.values())


# Datanet visibility -> {(adapter's team, adapter visibility) allowed}; teams: the Datanet's own, one
# granted access, one that is neither.
ALLOWED = {
    "public": {(team, vis) for team in ("own", "granted", "other") for vis in ("team", "public")},
    "permissioned": {("own", "team"), ("granted", "team")},
    "private": {("own", "team")},
}


def test_an_adapter_is_seen_no_wider_than_its_training_data(succeeded_job, trainer_user):
    """Each Datanet visibility in turn, on one trained job: fresh granted and other teams each time."""
    from datanets.models import AccessRequest, Datanet
    from tests.factories import TeamFactory

    version = succeeded_job.datanet_versions.select_related("datanet").get()
    MembershipFactory(team=version.datanet.team, user=trainer_user, role="owner")
    for datanet_visibility, allowed in ALLOWED.items():
        Datanet.objects.filter(pk=version.datanet_id).update(visibility=datanet_visibility)
        teams = {"own": version.datanet.team, "granted": TeamFactory(), "other": TeamFactory()}
        AccessRequest.objects.create(
            datanet=version.datanet, team=teams["granted"], requested_by=trainer_user, status="granted"
        )
        for which in ("granted", "other"):
            MembershipFactory(team=teams[which], user=trainer_user, role="owner")
        before = Adapter.objects.count()
        for which, team in teams.items():
            for visibility in ("team", "public"):
                name = f"Codes {datanet_visibility} {which} {visibility}"
                if (which, visibility) in allowed:
                    adapter = services.adapter_publish(
                        job=succeeded_job, by=trainer_user, team=team, name=name, visibility=visibility
                    )
                    assert (adapter.team, adapter.visibility) == (team, visibility)
                    continue
                with pytest.raises(ApplicationError):
                    services.adapter_publish(
                        job=succeeded_job, by=trainer_user, team=team, name=name, visibility=visibility
                    )
        assert Adapter.objects.count() - before == len(allowed), datanet_visibility


def test_a_member_cannot_publish_a_private_datanet_publicly_under_another_team(client, succeeded_job, trainer_user):
    """The attack from issue 14: nothing of the private Datanet reaches anyone outside its team."""
    from datanets.models import Datanet

    version = succeeded_job.datanet_versions.select_related("datanet").get()
    Datanet.objects.filter(pk=version.datanet_id).update(visibility="private")
    MembershipFactory(team=version.datanet.team, user=trainer_user, role="member")
    elsewhere = MembershipFactory(user=trainer_user, role="owner").team
    client.force_login(trainer_user)
    response = client.post(
        reverse("job_publish", args=[succeeded_job.pk]), {"name": "Leak", "visibility": "public", "team": elsewhere.pk}
    )
    assert response.status_code == 200 and "visible to its team only" in response.content.decode()
    with pytest.raises(ApplicationError, match="may not see"):
        services.adapter_publish(job=succeeded_job, by=trainer_user, team=elsewhere, name="Leak", visibility="team")
    assert not Adapter.objects.exists()
    anonymous = Client()
    assert version.merkle_root not in anonymous.get(reverse("adapter_list")).content.decode()
    assert anonymous.get("/api/v1/adapters/leak").status_code in (401, 404)
