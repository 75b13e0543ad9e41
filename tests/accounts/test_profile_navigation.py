"""A team member's way around: a profile page, links only to what a person can use, friendly error pages,
API tokens ready for README's download example, and a publishing form that says who sees what."""

import re

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import Team
from publishing import services
from publishing.models import ApiToken
from publishing.views import PublishForm
from tests.factories import DatanetFactory, MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_the_username_opens_a_profile_with_teams_tokens_and_contributions(client):
    user = UserFactory(username="ada")
    team = MembershipFactory(user=user, role="member").team
    services.token_create(user=user, name="laptop", scope="download")
    client.force_login(user)
    dashboard = client.get(reverse("dashboard")).content.decode()
    assert f'href="{reverse("profile")}" id="profile-link">ada</a>' in dashboard
    profile = client.get(reverse("profile")).content.decode()
    assert team.name in profile and "laptop" in profile and reverse("password_change") in profile
    assert 'id="profile-contributions"' in profile and reverse("team_create") in profile


def test_moderation_shows_only_to_curators_and_new_team_moves_to_the_profile(client):
    newcomer = UserFactory()
    client.force_login(newcomer)
    page = client.get(reverse("dashboard")).content.decode()
    assert f'href="{reverse("moderation")}"' not in page
    assert not re.search(r"<nav>.*New team.*</nav>", page, re.S)
    DatanetFactory().curators.add(newcomer)
    assert f'href="{reverse("moderation")}"' in client.get(reverse("dashboard")).content.decode()


def test_friendly_error_pages_with_debug_on_and_debug_pages_for_staff(client, settings):
    settings.DEBUG = True
    client.force_login(UserFactory())
    for url in ("/no-such-page/", reverse("team_detail", args=["no-such-team"])):
        response = client.get(url)
        assert response.status_code == 404 and 'id="not-found"' in response.content.decode()
        assert "Traceback" not in response.content.decode() and "URLconf" not in response.content.decode()
    assert client.get("/api/v1/adapters/none").headers["Content-Type"].startswith("application/json")
    client.force_login(UserFactory(is_staff=True))
    assert "URLconf" in client.get("/no-such-page/").content.decode()


def test_a_server_error_shows_a_friendly_page_and_logs_the_detail(settings, monkeypatch, caplog):
    settings.DEBUG = True
    from modelfactory import views

    def broken():
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(views.health, "run_checks", broken)
    client = Client(raise_request_exception=False)
    response = client.get(reverse("healthz"))
    assert response.status_code == 500 and 'id="server-error"' in response.content.decode()
    assert "disk on fire" not in response.content.decode()
    assert "disk on fire" in caplog.text


def test_a_new_token_reads_and_downloads_by_default_with_copy_and_snippets(client):
    user = UserFactory()
    client.force_login(user)
    form = client.get(reverse("tokens")).content.decode()
    assert re.search(r'<option value="download" selected>', form)
    body = client.post(reverse("tokens"), {"name": "laptop", "scope": "download"}).content.decode()
    secret = body.split('id="new-token">')[1].split("<")[0]
    assert ApiToken.objects.get().scope == "download" and 'id="copy-token"' in body
    download = "-o ADAPTER-v1.zip http://testserver/api/v1/adapters/ADAPTER/versions/1/download"
    assert f'curl -H "Authorization: Bearer {secret}" {download}' in body
    assert f'OpenAI(base_url="http://testserver/v1", api_key="{secret}")' in body


def test_the_publishing_form_says_who_will_not_see_a_team_adapter():
    text = str(PublishForm(teams=Team.objects.none()))
    assert "the contributors whose data trained it and everyone else do not" in text
