"""The newcomer's path in a real browser, as the people who walk it: two contributors upload, a curator
approves everything that matches and publishes a version, a model builder trains on it from the
version's page with the wizard and publishes the adapter to a team, a contributor opens and verifies
the receipt of an adapter they may not see, and a team member makes a token and downloads the adapter
with it. A real worker ingests, trains and publishes. Screenshots of each page stay in the test's folder."""

import json
import urllib.request
import zipfile
from pathlib import Path

import pytest

from datanets.models import Record
from tests.datanets.test_browser_flow import log_in
from tests.factories import DatanetFactory, MembershipFactory, UserFactory
from tests.publishing.test_receipts import verify
from training.models import FineTuneJob

pytestmark = pytest.mark.browser


def upload(page, url, datanet, rows, path: Path) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    page.goto(f"{url}/datanets/{datanet.slug}/contribute/")
    page.get_by_label("File").set_input_files(str(path))
    page.get_by_role("button", name="Upload").click()
    page.get_by_text(f"{len(rows)} records added for review").wait_for(timeout=60_000)


def contribute_and_curate(page, url, tmp_path):
    """Two contributors upload; the curator approves all that match at once and publishes version 1."""
    curator, first, second = UserFactory(), UserFactory(), UserFactory()
    datanet = DatanetFactory(name="Rare Disease Codes", slug="rare-disease-codes", visibility="public")
    MembershipFactory(team=datanet.team, user=curator, role="admin")
    for n, person in enumerate((first, second)):
        log_in(page, url, person)
        assert page.locator("nav").get_by_role("link", name="Moderation").count() == 0  # nothing to moderate
        rows = [
            {"instruction": f"What does code {n}{i} mean?", "output": f"Code {n}{i} means colour {i}."}
            for i in range(6)
        ]
        upload(page, url, datanet, rows, tmp_path / f"codes-{n}.jsonl")

    log_in(page, url, curator)
    page.locator("nav").get_by_role("link", name="Moderation").click()
    page.goto(f"{url}/moderation/?datanet={datanet.slug}")
    assert "200 per page" in page.get_by_label("Records per page").inner_text()  # a page size choice
    page.locator("#approve-matching").click()
    page.locator("#confirm-approve-matching").get_by_text("Approve all 12 pending records").wait_for()
    page.get_by_role("button", name="Approve 12 records").click()
    page.get_by_text("12 record(s) approved").wait_for()
    assert Record.objects.filter(status="approved").count() == 12
    # The empty queue leads on to publishing instead of showing an idle toolbar.
    assert page.get_by_role("button", name="Approve selected").count() == 0
    page.locator("#queue-empty").get_by_role("link", name=f"Open {datanet.name} to publish a version").click()
    page.get_by_role("button", name="Publish a version").click()
    page.get_by_text("Published version 1: 12 records").wait_for()
    # The export names contributors as manifests do (pseudonyms), never by internal id.
    page.goto(f"{url}/datanets/{datanet.slug}/versions/1/")
    with page.expect_download() as download:
        page.get_by_role("link", name="Export JSONL").click()
    lines = [json.loads(line) for line in download.value.path().read_text().splitlines()]
    assert len(lines) == 12 and all("contributor_id" not in line and line["contributor"] for line in lines)
    page.screenshot(path=str(tmp_path / "curator-datanet.png"), full_page=True)
    return datanet, curator, first


def wizard(page, url, datanet, builder, tmp_path):
    """From the version's page through the wizard's four steps to the launch."""
    log_in(page, url, builder)
    page.goto(f"{url}/datanets/{datanet.slug}/versions/1/")
    page.locator("#train-on-version").click()
    assert page.get_by_label(f"{datanet.name} v1", exact=False).is_checked()  # the version it came from
    page.get_by_role("button", name="Next").click()
    page.get_by_text("Which base model?").wait_for()
    assert page.get_by_label("Tiny Llama", exact=False).is_checked()  # the only base model
    page.get_by_role("button", name="Next").click()
    page.get_by_text("Method and preset").wait_for()
    assert page.get_by_label("Standard (default)", exact=False).is_checked()
    assert page.get_by_label("QLoRA: 4-bit", exact=False).count() == 1 and "QLORA" not in page.inner_text("body")
    page.get_by_text("Advanced settings").click()
    assert page.get_by_label("Learning-rate schedule").count() == 1
    assert page.get_by_label("LoRA rank").get_attribute("placeholder") == "16"  # the preset's value, greyed
    page.get_by_label("QLoRA: 4-bit", exact=False).check()
    page.get_by_label("Quick", exact=False).check()
    assert page.get_by_label("LoRA rank").get_attribute("placeholder") == "8"  # follows the preset
    page.get_by_label("Epochs").fill("60")
    page.get_by_label("Max sequence length").fill("64")
    page.get_by_label("Learning rate").fill("0.005")
    page.get_by_label("Batch size").fill("1")  # 4x the preset's steps: a run the job page's 2 s polls see advance
    page.get_by_role("button", name="Next").click()

    # Review: the estimate and the online worker; back keeps the choices; the name stays clear of the table.
    page.locator("#estimate").get_by_text("cpu").first.wait_for()
    page.get_by_role("button", name="Back").click()
    page.get_by_text("Advanced settings").wait_for()
    assert page.get_by_label("Epochs").input_value() == "60.0"
    page.get_by_role("button", name="Next").click()
    name, estimate = page.get_by_label("Name").bounding_box(), page.locator("#estimate").bounding_box()
    assert name["y"] + name["height"] <= estimate["y"]
    page.screenshot(path=str(tmp_path / "wizard-review.png"), full_page=True)
    page.get_by_label("Name").fill("Codes expert")
    page.get_by_role("button", name="Launch").click()
    page.wait_for_url("**/jobs/*/")


def watch_the_run(page, tmp_path) -> FineTuneJob:
    """The live job page: what the worker is doing, the loss curve on axes, then the evaluation."""
    job = FineTuneJob.objects.get()
    page.get_by_text("Running").wait_for(timeout=60_000)
    live = page.locator("#job-live")
    assert "queued" not in live.inner_text().lower() and "()" not in live.inner_text()
    page.wait_for_function("() => Number(document.querySelector('#job-step')?.textContent || 0) > 0", timeout=60_000)
    first = int(page.locator("#job-step").inner_text())
    # The counter moves on, or (the tiny model trains hundreds of steps a second on a fast day) the page has
    # already reloaded itself on the finished job.
    page.wait_for_function(
        f"() => Number(document.querySelector('#job-step')?.textContent || 0) > {first}"
        " || document.querySelector('#evaluation') !== null",
        timeout=60_000,
    )
    assert page.locator("svg.chart polyline.train-loss").count() == 1  # the loss curve is drawn
    assert page.locator("svg.chart polyline.smoothed-loss").count() == 1  # with its smoothed line
    assert page.locator("svg.chart .x-tick").count() >= 2  # on axes with step numbers

    page.locator("#evaluation").wait_for(timeout=180_000)  # the page reloads itself when the job ends
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert page.locator("#job-status").inner_text() == "Succeeded"
    assert float(page.locator("#tuned-loss").inner_text()) < float(page.locator("#base-loss").inner_text())
    assert page.locator("#task-trained").count() == 1  # recall of trained records, base beside fine-tune
    page.locator("#influence").get_by_text("datainf").first.wait_for()  # measured after training
    # Each contributor's records, training and held out apart, labelled.
    assert page.locator("#influence").get_by_text("Records (training + held out)").count() == 1
    splits = page.locator("#influence td.record-split").all_inner_texts()
    assert sorted(int(text.split()[0]) for text in splits) == [6, 6]
    settings = page.locator("#settings")
    assert settings.get_by_role("rowheader", name="Method").count() == 1
    assert settings.get_by_role("rowheader", name="Learning-rate schedule").count() == 1
    page.screenshot(path=str(tmp_path / "job.png"), full_page=True)
    # The job list tells jobs apart: method, preset and data beside the name.
    page.get_by_role("link", name="Jobs").first.click()
    row = page.locator("tr", has_text="Codes expert").first.inner_text()
    assert "QLoRA" in row and "Quick" in row and "Rare Disease Codes" in row
    page.go_back()
    return job


def publish(page, team, tmp_path) -> None:
    page.get_by_role("link", name="Publish as an adapter").click()
    page.get_by_text("the contributors whose data trained it and everyone else do not", exact=False).wait_for()
    page.get_by_label("Team").select_option(label=team.name)
    page.get_by_role("button", name="Publish").click()
    page.wait_for_url("**/publications/*/")  # the worker publishes; the progress page reloads when it is done
    page.locator("#publication-adapter").get_by_role("link", name="Codes expert v1").click(timeout=120_000)
    page.wait_for_url("**/adapters/codes-expert/v1/")
    assert page.locator("#influence-method").inner_text() == "datainf"
    assert page.locator("td.influence-share").count() == 2
    assert page.locator(".contributor-name").count() == 0  # pseudonyms only, for the builder
    assert all(0 <= float(share) <= 1 for share in page.locator("td.influence-share").all_inner_texts())
    card = page.locator("#model-card")
    assert card.locator("h1, h2, h3").count() > 1 and "---" not in card.inner_text()  # rendered, not raw
    page.screenshot(path=str(tmp_path / "adapter.png"), full_page=True)


def receipt(page, url, contributor, tmp_path) -> None:
    """A contributor opens the receipt of a team-only adapter and verifies it offline."""
    log_in(page, url, contributor)
    page.goto(f"{url}/contributions/adapters/")
    page.get_by_role("link", name="Codes expert v1").click()
    assert "used for training" in page.locator("#uses").inner_text()
    page.screenshot(path=str(tmp_path / "receipt.png"), full_page=True)
    with page.expect_download() as download:
        page.locator("#receipt-download").click()
    path = tmp_path / "receipt.json"
    download.value.save_as(path)
    result = verify("--receipt", path)
    assert result.returncode == 0, result.stderr
    assert "signature valid, 6 records each proven in its Datanet version" in result.stdout
    assert page.goto(f"{url}/adapters/codes-expert/v1/").status == 404  # the adapter itself stays the team's
    assert "Nothing here" in page.content() and "Traceback" not in page.content()


def token_and_download(page, url, member, tmp_path) -> None:
    """A team member makes a token from the profile page and downloads the adapter with it."""
    log_in(page, url, member)
    page.locator("#profile-link").click()
    page.get_by_role("link", name="Create or revoke tokens").click()
    assert page.get_by_label("Scope").input_value() == "download"
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#new-token").inner_text().strip()
    assert page.locator("#copy-token").count() == 1
    assert (
        secret in page.locator("#curl-snippet").inner_text() and secret in page.locator("#openai-snippet").inner_text()
    )
    page.screenshot(path=str(tmp_path / "token.png"), full_page=True)
    request = urllib.request.Request(
        f"{url}/api/v1/adapters/codes-expert/versions/1/download", headers={"Authorization": f"Bearer {secret}"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        (tmp_path / "adapter.zip").write_bytes(response.read())
    assert "manifest.json" in zipfile.ZipFile(tmp_path / "adapter.zip").namelist()


def test_contribute_curate_train_publish_and_download_as_each_newcomer(
    live_server, celery_worker_process, page, tiny_base_model, tmp_path
):
    url = live_server.url
    datanet, curator, contributor = contribute_and_curate(page, url, tmp_path)
    builder, member = UserFactory(), UserFactory()
    team = MembershipFactory(user=builder, role="owner").team
    MembershipFactory(team=team, user=member)
    MembershipFactory(team=team, user=curator)  # the Datanet's curator works with the team too
    wizard(page, url, datanet, builder, tmp_path)
    watch_the_run(page, tmp_path)
    publish(page, team, tmp_path)
    # The Datanet's curator sees who is who where the builder sees pseudonyms.
    log_in(page, url, curator)
    page.goto(f"{url}/adapters/codes-expert/v1/")
    assert contributor.username in page.locator(".contributor-name").all_inner_texts()
    receipt(page, url, contributor, tmp_path)
    token_and_download(page, url, member, tmp_path)
