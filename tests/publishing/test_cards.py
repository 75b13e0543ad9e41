"""The adapter page shows the model card rendered, its front matter as a table, and nothing a card could inject."""

from django.urls import reverse

from publishing.cards import render_card


def test_card_markdown_is_rendered_and_html_in_it_is_inert():
    meta, html = render_card(
        "---\nbase_model: Tiny\ntags:\n- lora\n- codes\n---\n# Codes <script>alert(1)</script>\n\n"
        "[click](javascript:alert(2)) <img src=x onerror=alert(3)>\n\n| | loss |\n|---|---|\n| base | 1.5 |\n"
    )
    assert meta == [("base_model", "Tiny"), ("tags", "lora, codes")]
    assert "<h1>Codes &lt;script&gt;alert(1)&lt;/script&gt;</h1>" in html
    assert "<script" not in html and "<img" not in html and 'href="javascript:' not in html
    assert "<table>" in html and "<td>1.5</td>" in html
    assert render_card("# No front matter") == ([], "<h1>No front matter</h1>\n")
    assert render_card("---\n: [unclosed\n---\nbody")[0] == []  # unreadable YAML: shown as text, not lost


def test_the_adapter_page_renders_its_model_card_and_splits_records_labelled(client, adapter, trainer_user):
    client.force_login(trainer_user)
    page = client.get(reverse("adapter_detail", args=[adapter.slug, adapter.version])).content.decode()
    card = page[page.index('id="model-card"') :]
    assert "<th>base_model</th><td>Tiny Llama</td>" in card and "<th>library_name</th><td>peft</td>" in card
    assert "<h1>Codes Expert (version 1)</h1>" in card and "<h2>Evaluation</h2>" in card
    assert "<table>" in card and "---\nbase_model" not in page and "## Training setup" not in page
    training, held_out = adapter.job.evaluation["train_examples"], adapter.job.evaluation["eval_examples"]
    assert f'class="record-split">24 <span class="muted">({training} + {held_out})</span>' in page
