"""The pages a newcomer meets, in a real browser at 1280 px and at 390 px wide: each answers without an
error, nothing makes the page scroll sideways and no text or control lies over another. The
screenshots stay in the test's folder for review."""

import pytest
from django.conf import settings
from django.test import Client

from datanets import services as datanet_services
from datanets.models import Record
from publishing import services as publishing_services
from tests.factories import MembershipFactory, UserFactory, make_version
from tests.publishing.conftest import run_job

pytestmark = pytest.mark.browser

WIDTHS = (1280, 390)
NOT_FOUND = "/adapters/no-such-adapter/v1/"  # the friendly 404 page
# The widest elements that reach past the viewport, for the failure message.
OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth <= width) return [];
  return [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > width + 1)
    .slice(-5)
    .map(e => `${e.tagName.toLowerCase()}.${e.className} ends at ${Math.round(e.getBoundingClientRect().right)}px`);
}"""

# Visible text and controls that cover part of another (neither inside the other): a label over a field,
# a button over a heading. Two boxes may touch; sharing more than 2 px each way is an overlap.
OVERLAP = """() => {
  const boxes = e => [...e.getClientRects()].filter(r => r.width > 2 && r.height > 2);
  const seen = [...document.querySelectorAll(
    'a, button, input, select, textarea, label, h1, h2, h3, p, th, td, li, dt, dd, summary, img, svg, pre, code')]
    .filter(e => e.checkVisibility({visibilityProperty: true, opacityProperty: true}) && boxes(e).length);
  const name = e => `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''} "${(e.innerText || e.value || '').trim().slice(0, 30)}"`;
  const found = [];
  for (let i = 0; i < seen.length && found.length < 5; i++) {
    for (let j = i + 1; j < seen.length && found.length < 5; j++) {
      if (seen[i].contains(seen[j]) || seen[j].contains(seen[i])) continue;
      // Each line box of an inline element on its own: one that wraps has a bounding box over both lines.
      for (const a of boxes(seen[i])) for (const b of boxes(seen[j])) {
        const x = Math.min(a.right, b.right) - Math.max(a.left, b.left);
        const y = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
        if (x > 2 && y > 2 && found.length < 5) found.push(
          `${name(seen[i])} and ${name(seen[j])} overlap by ${Math.round(x)}x${Math.round(y)} px`);
      }
    }
  }
  return found;
}"""


def pages(team, datanet, job, adapter) -> list[str]:
    """The model builder's pages (a curator of the Datanet too)."""
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
        f"/moderation/?datanet={datanet.slug}&confirm=approve_matching",
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
        NOT_FOUND,
    ]


def contributor_pages(adapter) -> list[str]:
    """A contributor's receipt of a team-only adapter they may not open."""
    return [f"/contributions/adapters/{adapter.slug}/v{adapter.version}/"]


def test_no_page_overflows_or_overlaps_at_desktop_or_phone_width(
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

    author = Record.objects.filter(datanet=datanet, status="approved").first().contributor
    walks = [(trainer_user, pages(team, datanet, job, adapter)), (author, contributor_pages(adapter))]
    problems = []
    for width in WIDTHS:
        for user, paths in walks:
            problems += walk(browser, live_server.url, user, paths, width, tmp_path)
    assert not problems, "\n".join(problems)


def walk(browser, url, user, paths, width, folder) -> list[str]:
    client = Client()
    client.force_login(user)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    context = browser.new_context(viewport={"width": width, "height": 900})
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": url}])
    page = context.new_page()
    problems = []
    for path in paths:
        response = page.goto(url + path)
        if response.status >= 400 and path != NOT_FOUND:
            problems.append(f"{path} at {width}px: HTTP {response.status}")
            continue
        wide = page.evaluate(OVERFLOW)
        if wide:
            problems.append(f"{path} at {width}px scrolls sideways: {'; '.join(wide)}")
        covered = page.evaluate(OVERLAP)
        if covered:
            problems.append(f"{path} at {width}px: {'; '.join(covered)}")
        name = path.strip("/").replace("/", "_").replace("?", "_").replace("&", "_").replace("=", "-") or "home"
        page.screenshot(path=str(folder / f"{width}-{name}.png"), full_page=True)
    context.close()
    return problems
