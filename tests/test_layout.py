"""The pages a newcomer meets, in a real browser at 1280 px and at 390 px wide: each answers without an
error and nothing makes the page scroll sideways. The screenshots stay in the test's folder for review."""

import pytest
from django.conf import settings
from django.test import Client

from datanets import services as datanet_services
from publishing import services as publishing_services
from tests.factories import MembershipFactory, UserFactory, make_version
from tests.publishing.conftest import run_job

pytestmark = pytest.mark.browser

WIDTHS = (1280, 390)
# The widest elements that reach past the viewport, for the failure message.
OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth <= width) return [];
  return [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > width + 1)
    .slice(-5)
    .map(e => `${e.tagName.toLowerCase()}.${e.className} ends at ${Math.round(e.getBoundingClientRect().right)}px`);
}"""


def pages(team, datanet, job, adapter) -> list[str]:
    detail = f"/adapters/{adapter.slug}/v{adapter.version}/"
    return [
        "/",
        "/dashboard/",
        "/account/",
        f"/teams/{team.slug}/",
        "/account/tokens/",
        "/datanets/",
        f"/datanets/{datanet.slug}/",
        f"/datanets/{datanet.slug}/versions/1/",
        f"/datanets/{datanet.slug}/contribute/",
        "/moderation/",
        "/contributions/",
        "/contributions/adapters/",
        "/base-models/",
        "/train/",
        "/jobs/",
        f"/jobs/{job.pk}/",
        f"/jobs/{job.pk}/publish/",
        "/adapters/",
        detail,
        detail + "playground/",
    ]


def test_no_page_overflows_at_desktop_or_phone_width(
    live_server, browser, tmp_path, tiny_base_model, trainer_user, django_capture_on_commit_callbacks
):
    team = MembershipFactory(user=trainer_user, role="owner").team
    version = make_version(trainer_user, n=24, name="Rare disease codes with a rather long name for a phone")
    datanet = version.datanet
    datanet.curators.add(trainer_user)
    datanet_services.record_create(  # one record waits in the moderation queue
        datanet=datanet,
        contributor=UserFactory(),
        value={"instruction": "What does code 99 mean? " * 8, "output": "Code99meansgreen" * 12},
    )
    job = run_job(trainer_user, tiny_base_model, version, django_capture_on_commit_callbacks)
    adapter = publishing_services.adapter_publish(job=job, by=trainer_user, team=team, name="Codes Expert")

    client = Client()
    client.force_login(trainer_user)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    problems = []
    for width in WIDTHS:
        context = browser.new_context(viewport={"width": width, "height": 900})
        context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server.url}])
        page = context.new_page()
        for path in pages(team, datanet, job, adapter):
            response = page.goto(live_server.url + path)
            if response.status >= 400:
                problems.append(f"{path} at {width}px: HTTP {response.status}")
                continue
            wide = page.evaluate(OVERFLOW)
            if wide:
                problems.append(f"{path} at {width}px scrolls sideways: {'; '.join(wide)}")
            name = path.strip("/").replace("/", "_") or "home"
            page.screenshot(path=str(tmp_path / f"{width}-{name}.png"), full_page=True)
        context.close()
    assert not problems, "\n".join(problems)
