"""Team tokens reach what their team may, not all their user may; saved rejection reasons stay in their team."""

from django.test import Client
from django.urls import reverse

from datanets import services
from datanets.models import AccessRequest, Record
from publishing import services as publishing_services
from tests.datanets.conftest import qa
from tests.factories import DatanetFactory, MembershipFactory, UserFactory


def listed(secret) -> tuple[list[str], dict[str, int]]:
    client, auth = Client(), {"Authorization": f"Bearer {secret}"}
    slugs = sorted(d["slug"] for d in client.get("/api/v1/datanets", headers=auth).json()["items"])
    versions = {
        slug: client.get(f"/api/v1/datanets/{slug}/versions", headers=auth).status_code
        for slug in ("own", "granted", "ungranted", "open")
    }
    return slugs, versions


def test_a_team_token_lists_only_its_teams_datanets(db):
    user = UserFactory()
    team_a = MembershipFactory(user=user, role="owner").team
    team_b = MembershipFactory(user=user, role="member").team
    DatanetFactory(slug="own", team=team_a, visibility="private")
    granted = DatanetFactory(slug="granted", visibility="permissioned")
    AccessRequest.objects.create(datanet=granted, team=team_a, requested_by=user, status="granted")
    DatanetFactory(slug="ungranted", visibility="permissioned")
    DatanetFactory(slug="open", visibility="public")
    tokens = {
        scope: publishing_services.token_create(user=user, name=scope, scope="read", team=team)[1]
        for scope, team in (("personal", None), ("team a", team_a), ("team b", team_b))
    }
    assert listed(tokens["personal"]) == (
        ["granted", "open", "own", "ungranted"],
        dict.fromkeys(["own", "granted", "ungranted", "open"], 200),
    )
    assert listed(tokens["team a"]) == (
        ["granted", "open", "own"],
        {"own": 200, "granted": 200, "ungranted": 404, "open": 200},
    )
    assert listed(tokens["team b"]) == (["open"], {"own": 404, "granted": 404, "ungranted": 404, "open": 200})


def test_saved_rejection_reasons_stay_in_their_team(db):
    contributor = UserFactory()
    pages = {}
    for team_name, reason in (("x", "Off topic for cardiology"), ("y", None)):
        datanet = DatanetFactory(slug=f"datanet-{team_name}")
        curator = MembershipFactory(team=datanet.team, role="admin").user
        record = services.record_create(datanet=datanet, contributor=contributor, value=qa(1))
        services.record_create(datanet=datanet, contributor=contributor, value=qa(2))  # keeps the queue's toolbar
        if reason:
            services.records_moderate(
                records_qs=Record.objects.filter(pk=record.pk), by=curator, approve=False, reason=reason
            )
        client = Client()
        client.force_login(curator)
        pages[team_name] = client.get(reverse("moderation")).content.decode()
    assert "<option>Off topic for cardiology</option>" in pages["x"]
    assert "Off topic for cardiology" not in pages["y"]
