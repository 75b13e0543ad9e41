"""The Datanet lifecycle in a real browser, with a real worker ingesting uploads:
upload with bad lines -> see which and why -> fixed upload -> moderation -> version -> access grant."""

import json

import pytest

from datanets.models import AccessRequest, DatanetVersion, Record
from tests.factories import PASSWORD, DatanetFactory, MembershipFactory, UserFactory

pytestmark = pytest.mark.browser


def log_in(page, base_url, user):
    page.context.clear_cookies()
    page.goto(base_url + "/accounts/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/dashboard/")


def test_contribute_moderate_publish_and_grant_access(live_server, celery_worker_process, page, tmp_path):
    url = live_server.url
    curator, contributor, outsider = UserFactory(), UserFactory(), UserFactory()
    datanet = DatanetFactory(name="Rare Disease QA", slug="rare-disease-qa", visibility="permissioned")
    MembershipFactory(team=datanet.team, user=curator, role="admin")
    other_team = MembershipFactory(user=outsider, role="owner").team

    good = [{"instruction": f"Which gene is linked to syndrome {i}?", "output": f"Gene G{i}."} for i in range(6)]
    bad_file = tmp_path / "rare.jsonl"
    bad_file.write_text(
        "\n".join([json.dumps(good[0]), "{oops", json.dumps({"instruction": "missing answer"}), json.dumps(good[1])])
    )
    good_file = tmp_path / "rare-fixed.jsonl"
    good_file.write_text("\n".join(json.dumps(row) for row in good) + "\n")

    # A contributor uploads a file with bad lines and sees which lines and why; nothing is stored.
    log_in(page, url, contributor)
    page.goto(f"{url}/datanets/{datanet.slug}/contribute/")
    page.get_by_label("File").set_input_files(str(bad_file))
    page.get_by_role("button", name="Upload").click()
    page.locator("#rejected-lines").wait_for(timeout=60_000)
    table = page.locator("#rejected-lines").inner_text()
    assert "2\tmalformed JSON" in table
    assert "3\t'output' is missing" in table
    assert "nothing was stored" in page.content()
    assert Record.objects.count() == 0

    # The fixed file goes in, with live progress until it is done.
    page.goto(f"{url}/datanets/{datanet.slug}/contribute/")
    page.get_by_label("File").set_input_files(str(good_file))
    page.get_by_role("button", name="Upload").click()
    page.get_by_text("6 records added for review").wait_for(timeout=60_000)
    assert Record.objects.filter(status="pending").count() == 6

    # The curator approves four and rejects two with a reason, then publishes a version.
    log_in(page, url, curator)
    page.goto(f"{url}/moderation/?datanet={datanet.slug}")
    ids = list(Record.objects.order_by("id").values_list("id", flat=True))
    for pk in ids[:4]:
        page.get_by_label(f"Select record {pk}").check()
    page.get_by_role("button", name="Approve selected").click()
    page.get_by_text("4 record(s) approved").wait_for()
    for pk in ids[4:]:
        page.get_by_label(f"Select record {pk}").check()
    page.get_by_label("Rejection reason").fill("Gene name not verifiable")
    page.get_by_role("button", name="Reject selected").click()
    page.get_by_text("2 record(s) rejected").wait_for()

    page.goto(f"{url}/datanets/{datanet.slug}/")
    page.get_by_role("button", name="Publish a version").click()
    page.get_by_text("Published version 1: 4 records").wait_for()
    version = DatanetVersion.objects.get()
    assert page.locator("#merkle-root").inner_text() == version.merkle_root

    # The contributor sees each record's status and the reason for rejections.
    log_in(page, url, contributor)
    page.goto(f"{url}/contributions/")
    assert page.get_by_text("Gene name not verifiable").count() == 2

    # A second team asks for access to the permissioned Datanet and is granted it.
    log_in(page, url, outsider)
    page.goto(f"{url}/datanets/{datanet.slug}/versions/1/")
    assert page.get_by_role("link", name="Export JSONL").count() == 0
    page.goto(f"{url}/datanets/{datanet.slug}/")
    page.get_by_label("Team").select_option(label=other_team.name)
    page.get_by_label("Message").fill("We build a genetics triage model.")
    page.get_by_role("button", name="Request access").click()
    page.get_by_text("Access requested").wait_for()

    log_in(page, url, curator)
    page.goto(f"{url}/datanets/{datanet.slug}/")
    page.get_by_label(f"Message to {other_team.name}").fill("Granted for research use.")
    page.get_by_role("button", name="Grant").click()
    page.get_by_text(f"Access granted to {other_team.name}").wait_for()
    assert AccessRequest.objects.get().status == "granted"

    log_in(page, url, outsider)
    page.goto(f"{url}/datanets/{datanet.slug}/versions/1/")
    with page.expect_download() as download:
        page.get_by_role("link", name="Export JSONL").click()
    exported = download.value.path().read_text().splitlines()
    assert len(exported) == 4
    page.screenshot(path=str(tmp_path / "version.png"), full_page=True)
