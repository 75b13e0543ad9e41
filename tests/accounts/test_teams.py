"""Teams: creation, invitations by username, and the role x page permission matrix."""

import pytest
from django.urls import reverse

from accounts import services
from accounts.models import Invitation, Membership, Team
from modelfactory.exceptions import ApplicationError
from tests.factories import MembershipFactory, TeamFactory, UserFactory

pytestmark = pytest.mark.django_db

ROLES = ["anonymous", "outsider", "member", "admin", "owner", "staff"]


@pytest.fixture
def team():
    return TeamFactory(name="Cardiology", slug="cardiology")


def client_as(client, role, team):
    """A test client logged in as someone with ``role`` towards ``team``."""
    if role == "anonymous":
        return client
    user = UserFactory(is_staff=role == "staff")
    if role in {"member", "admin", "owner"}:
        MembershipFactory(team=team, user=user, role=role)
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    "role, expected",
    [("anonymous", 302), ("outsider", 404), ("member", 200), ("admin", 200), ("owner", 200), ("staff", 200)],
)
def test_who_sees_a_team_page(client, team, role, expected):
    response = client_as(client, role, team).get(reverse("team_detail", args=[team.slug]))
    assert response.status_code == expected
    if expected == 302:
        assert response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize(
    "role, invited",
    [("anonymous", False), ("outsider", False), ("member", False), ("admin", True), ("owner", True), ("staff", True)],
)
def test_who_invites_to_a_team(client, team, role, invited):
    invitee = UserFactory(username="newcomer")
    client_as(client, role, team).post(
        reverse("team_detail", args=[team.slug]), {"username": "newcomer", "role": "member"}
    )
    assert Invitation.objects.filter(team=team, user=invitee).exists() is invited


def test_a_missing_team_and_a_forbidden_team_look_the_same(client, team):
    client.force_login(UserFactory())
    forbidden = client.get(reverse("team_detail", args=[team.slug]))
    missing = client.get(reverse("team_detail", args=["no-such-team"]))
    assert forbidden.status_code == missing.status_code == 404


def test_team_create_makes_the_creator_owner_and_unique_slugs():
    owner = UserFactory()
    first = services.team_create(name="Legal Eagles", owner=owner)
    second = services.team_create(name="Legal  Eagles", owner=owner)
    assert (first.slug, second.slug) == ("legal-eagles", "legal-eagles-2")
    assert Membership.objects.get(team=first, user=owner).role == Membership.Role.OWNER
    with pytest.raises(ApplicationError):
        services.team_create(name="!!!", owner=owner)
    assert Team.objects.count() == 2


def test_invitation_accept_and_bad_invitations(team):
    owner = MembershipFactory(team=team, role="owner").user
    admin = MembershipFactory(team=team, role="admin").user
    invitee = UserFactory()

    with pytest.raises(ApplicationError, match="no user named"):
        services.team_invite(team=team, username="nobody", role="member", by=owner)
    with pytest.raises(ApplicationError, match="may not invite"):
        services.team_invite(team=team, username=invitee.username, role="owner", by=admin)

    invitation = services.team_invite(team=team, username=invitee.username, role="admin", by=owner)
    with pytest.raises(ApplicationError, match="pending invitation"):
        services.team_invite(team=team, username=invitee.username, role="member", by=owner)
    with pytest.raises(ApplicationError, match="someone else"):
        services.invitation_answer(invitation=invitation, accept=True, by=admin)

    services.invitation_answer(invitation=invitation, accept=True, by=invitee)
    assert Membership.objects.get(team=team, user=invitee).role == "admin"
    with pytest.raises(ApplicationError, match="already been answered"):
        services.invitation_answer(invitation=invitation, accept=False, by=invitee)
    with pytest.raises(ApplicationError, match="already a member"):
        services.team_invite(team=team, username=invitee.username, role="member", by=owner)


def test_someone_else_cannot_answer_my_invitation_through_the_page(client, team):
    owner = MembershipFactory(team=team, role="owner").user
    invitee, intruder = UserFactory(), UserFactory()
    invitation = services.team_invite(team=team, username=invitee.username, role="member", by=owner)
    client.force_login(intruder)
    response = client.post(reverse("invitation_answer", args=[invitation.pk]), {"answer": "accept"})
    assert response.status_code == 404
    assert not Membership.objects.filter(team=team, user=intruder).exists()


def test_dashboard_lists_teams_and_invitations_without_n_plus_one(client, django_assert_max_num_queries):
    user = UserFactory()
    for _ in range(5):
        MembershipFactory(user=user)
        other_team = TeamFactory()
        services.team_invite(
            team=other_team,
            username=user.username,
            role="member",
            by=MembershipFactory(team=other_team, role="owner").user,
        )
    client.force_login(user)
    with django_assert_max_num_queries(8):
        response = client.get(reverse("dashboard"))
    assert response.status_code == 200
    assert response.content.decode().count("invited you to") == 5


def test_signup_logs_in_and_rejects_weak_passwords(client):
    response = client.post(reverse("signup"), {"username": "ada", "password1": "12345678", "password2": "12345678"})
    assert response.status_code == 200
    assert "too common" in response.content.decode()
    response = client.post(
        reverse("signup"),
        {"username": "ada", "password1": "analytical-engine-1843", "password2": "analytical-engine-1843"},
    )
    assert response.status_code == 302 and response["Location"] == reverse("dashboard")
    assert client.get(reverse("dashboard")).status_code == 200
