"""A real browser (Debian's chromium driven by Playwright) signs up, creates a team, reaches the dashboard."""

import pytest

pytestmark = pytest.mark.browser


def test_sign_up_create_a_team_and_reach_the_dashboard(live_server, page, tmp_path):
    from django.contrib.auth import get_user_model

    from accounts.models import Membership

    requests_outside = []
    page.on("request", lambda r: None if r.url.startswith(live_server.url) else requests_outside.append(r.url))

    page.goto(live_server.url + "/")
    page.get_by_role("link", name="Sign up").first.click()
    page.get_by_label("Username").fill("grace")
    page.get_by_label("Password", exact=True).fill("cobol-compiler-1959")
    page.get_by_label("Password confirmation").fill("cobol-compiler-1959")
    page.get_by_role("button", name="Sign up").click()

    page.wait_for_url("**/dashboard/")
    assert page.get_by_role("heading", name="Dashboard").is_visible()
    assert "Welcome to ModelFactory, grace" in page.content()
    assert "not in a team yet" in page.content()

    page.get_by_role("link", name="Create a team").click()
    # htmx swaps the form back with the error, without a page load.
    page.get_by_label("Name").fill("!!!")
    page.get_by_role("button", name="Create team").click()
    page.get_by_text("at least one letter or digit").wait_for()
    page.get_by_label("Name").fill("Rare Diseases")
    page.get_by_role("button", name="Create team").click()

    page.wait_for_url("**/teams/rare-diseases/")
    assert page.get_by_role("heading", name="Rare Diseases").is_visible()
    assert "You are its owner" in page.content()

    page.get_by_role("link", name="Dashboard").click()
    page.wait_for_url("**/dashboard/")
    assert page.locator("#team-list").get_by_role("link", name="Rare Diseases").is_visible()
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

    user = get_user_model().objects.get(username="grace")
    assert Membership.objects.get(user=user).role == "owner"
    assert requests_outside == []  # every asset comes from the app itself, no CDN
