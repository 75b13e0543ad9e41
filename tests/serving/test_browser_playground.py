"""A real browser chats with an adapter in the playground: tokens stream in beside the base model's,
and the span repeated from a training record is highlighted with its contributor."""

import pytest

from accounts.contributors import contributor_pseudonym
from datanets.models import Record
from tests.datanets.test_browser_flow import log_in

pytestmark = pytest.mark.browser
SAID_WHILE_WAITING = """() => {
  window.saidWhileWaiting = [];
  new MutationObserver(() => document.querySelectorAll('.loading-message').forEach(
    e => window.saidWhileWaiting.push(e.textContent))).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def test_chat_in_the_playground_and_see_the_attribution(
    live_server, page, chat_adapter, trainer_user, inference_worker_process, tmp_path
):
    outside = []
    page.on("request", lambda r: None if r.url.startswith(live_server.url) else outside.append(r.url))
    log_in(page, live_server.url, trainer_user)
    page.goto(f"{live_server.url}/adapters/{chat_adapter.slug}/v{chat_adapter.version}/")
    page.get_by_role("link", name="Try it in the playground").click()
    page.get_by_role("heading", name="Playground").wait_for()

    page.get_by_label("Message").fill("What does code 4 mean?")
    page.get_by_label("Temperature").fill("0")
    # Every text the waiting answer shows before its first token (the first answer loads the model).
    page.evaluate(SAID_WHILE_WAITING)
    page.get_by_role("button", name="Send").click()
    adapter_answer = page.locator('.turn [data-side="adapter"]').last
    mark = adapter_answer.locator("mark.attributed").first
    mark.wait_for(timeout=120_000)
    page.locator('.turn [data-side="base"] .answer-text:not(.streaming)').last.wait_for()

    said = page.evaluate("window.saidWhileWaiting")
    assert any("loading the model" in text.lower() and "step 1 of" in text for text in said), said
    assert page.locator(".loading").count() == 0  # gone once the answers stream

    answer = adapter_answer.locator(".answer-text").inner_text()
    record = next(r for r in Record.objects.filter(contributor__username="alice") if r.content["output"] in answer)
    pseudonym = contributor_pseudonym(record.contributor_id)
    assert record.content["output"] in mark.inner_text()
    assert pseudonym in mark.get_attribute("title") and f"record {record.pk}" in mark.get_attribute("title")
    assert pseudonym in adapter_answer.locator(".attribution").inner_text()
    page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)

    # Text is inert: markup in a message (or an answer) is shown, never run.
    page.get_by_label("Message").fill("<img src=x onerror=alert(1)>")
    page.get_by_role("button", name="Send").click()
    page.locator('.turn [data-side="adapter"] .answer-text:not(.streaming)').nth(1).wait_for(timeout=120_000)
    assert page.locator(".user-text").last.inner_text() == "<img src=x onerror=alert(1)>"
    assert page.locator("#conversation img").count() == 0

    # The conversation is kept in the session: a reload shows the turn, highlighted, rendered by the server.
    page.reload()
    assert page.locator(".turn").count() == 2
    assert record.content["output"] in page.locator("mark.attributed").first.inner_text()
    assert page.locator(".turn .user-message").last.inner_text().endswith("<img src=x onerror=alert(1)>")
    assert page.locator("#conversation img").count() == 0
    page.get_by_role("button", name="New conversation").click()
    page.wait_for_load_state()
    assert page.locator(".turn").count() == 0
    assert outside == []
