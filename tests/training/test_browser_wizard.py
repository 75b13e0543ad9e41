"""A real browser walks the wizard, launches a real fine-tune on a real worker, and watches the live page."""

import pytest

from tests.datanets.test_browser_flow import log_in
from tests.factories import MembershipFactory
from training.models import FineTuneJob

pytestmark = pytest.mark.browser


def test_walk_the_wizard_and_watch_the_run(
    live_server, celery_worker_process, page, tiny_base_model, trainer_user, version, tmp_path
):
    url = live_server.url
    team = MembershipFactory(user=trainer_user, role="owner").team
    log_in(page, url, trainer_user)
    page.get_by_role("link", name="Train").click()
    page.get_by_label(f"{version.datanet.name} v1", exact=False).check()
    page.get_by_role("button", name="Next").click()
    page.get_by_text("Which base model?").wait_for()
    page.get_by_label("Tiny Llama", exact=False).check()
    page.get_by_role("button", name="Next").click()
    page.get_by_text("Method and preset").wait_for()
    page.get_by_label("QLoRA: 4-bit", exact=False).check()
    page.get_by_label("Quick", exact=False).check()
    page.get_by_text("Advanced settings").click()
    page.get_by_label("Epochs").fill("60")
    page.get_by_label("Max sequence length").fill("64")
    page.get_by_label("Learning rate").fill("0.005")
    page.get_by_role("button", name="Next").click()

    # Review: the estimate and the online worker; back keeps the choices.
    page.locator("#estimate").get_by_text("cpu").first.wait_for()
    page.get_by_role("button", name="Back").click()
    page.get_by_text("Advanced settings").wait_for()
    assert page.get_by_label("Epochs").input_value() == "60.0"
    page.get_by_role("button", name="Next").click()
    page.get_by_label("Name").fill("Codes expert")
    page.get_by_role("button", name="Launch").click()

    page.wait_for_url("**/jobs/*/")
    job = FineTuneJob.objects.get()
    page.get_by_text("Running").wait_for(timeout=60_000)
    page.wait_for_function("() => Number(document.querySelector('#job-step')?.textContent || 0) > 0", timeout=60_000)
    first = int(page.locator("#job-step").inner_text())
    page.wait_for_function(
        f"() => Number(document.querySelector('#job-step')?.textContent || 0) > {first}", timeout=60_000
    )
    assert page.locator("svg.chart polyline.train-loss").count() == 1  # the loss curve is drawn
    assert page.locator("svg.chart polyline.smoothed-loss").count() == 1  # with its smoothed line
    assert page.locator("svg.chart .x-tick").count() >= 2  # on axes with step numbers

    page.locator("#evaluation").wait_for(timeout=180_000)  # the page reloads itself when the job ends
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert page.locator("#job-status").inner_text() == "Succeeded"
    assert float(page.locator("#tuned-loss").inner_text()) < float(page.locator("#base-loss").inner_text())
    page.locator("#influence").get_by_text("datainf").first.wait_for()  # measured after training
    page.screenshot(path=str(tmp_path / "job.png"), full_page=True)

    # Publish it: the adapter page shows each contributor's influence beside the token share.
    page.get_by_role("link", name="Publish as an adapter").click()
    page.get_by_label("Team").select_option(label=team.name)
    page.get_by_role("button", name="Publish").click()
    page.wait_for_url("**/publications/*/")  # the worker publishes; the progress page reloads when it is done
    page.locator("#publication-adapter").get_by_role("link", name="Codes expert v1").click(timeout=120_000)
    page.wait_for_url("**/adapters/codes-expert/v1/")
    assert page.locator("#influence-method").inner_text() == "datainf"
    assert page.locator("td.influence-share").count() == 1
    assert 0 <= float(page.locator("td.influence-share").inner_text()) <= 1
