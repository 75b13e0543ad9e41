"""What the signed zip claims: which records trained the adapter and which only evaluated it, a record
checked as uploaded, the base model by its catalogue name, a model card escaped for Markdown."""

import json
import zipfile

from publishing import publish, services
from tests.publishing.test_publish_verify import download_with_token, manifest_rows, verify


def fetch(client, adapter, user, tmp_path):
    path = tmp_path / f"{adapter.slug}-v{adapter.version}.zip"
    path.write_bytes(b"".join(download_with_token(client, adapter, user).streaming_content))
    return path


def test_held_out_records_are_certified_as_evaluation_only(client, adapter, trainer_user, tmp_path):
    zip_path = fetch(client, adapter, trainer_user, tmp_path)
    rows = manifest_rows(zip_path)
    held = [row for row in rows if row["role"] == "evaluation"]
    assert len(rows) == 24 and len(held) == adapter.job.evaluation["eval_examples"] > 0
    assert adapter.manifest["held_out"]["records"] == len(held)
    assert adapter.manifest["totals"]["records"] == 24 - len(held)
    record = adapter.used_records.get(record__content_hash=held[0]["content_hash"]).record
    (tmp_path / "held.json").write_text(json.dumps({"content": record.content}))
    result = verify(zip_path, "--record", str(tmp_path / "held.json"))
    assert result.returncode == 8, (result.stdout, result.stderr)
    assert f"HELD OUT record {record.content_hash}" in result.stdout and "did not train it" in result.stdout


def test_the_verifier_takes_a_record_exactly_as_uploaded(client, adapter, trainer_user, tmp_path):
    zip_path = fetch(client, adapter, trainer_user, tmp_path)
    trained = next(row for row in manifest_rows(zip_path) if row["role"] == "training")
    content = adapter.used_records.get(record__content_hash=trained["content_hash"]).record.content
    raw_line = json.dumps({"instruction": "  " + content["instruction"], "output": content["output"] + "\n"})
    assert "input" not in raw_line  # the uploaded line had none; the ingest adds "input": ""
    (tmp_path / "as-uploaded.jsonl").write_text(raw_line + "\n")
    result = verify(zip_path, "--record", str(tmp_path / "as-uploaded.jsonl"))
    assert result.returncode == 0, result.stderr
    assert f"INCLUDED record {trained['content_hash']}" in result.stdout and "it trained the adapter" in result.stdout


def test_the_zip_names_the_base_model_and_escapes_the_card_for_markdown(
    client, succeeded_job, trainer_user, team, tiny_base_model, tmp_path
):
    description = "Don't mix codes & colours.\n<script>alert(1)</script> *bold* [link](http://x)\n- a list?"
    adapter = services.adapter_publish(
        job=succeeded_job,
        by=trainer_user,
        team=team,
        name="Codes & Colours",
        description=description,
        domain="codes: colours",
    )
    with zipfile.ZipFile(fetch(client, adapter, trainer_user, tmp_path)) as archive:
        config = json.loads(archive.read("adapter/adapter_config.json"))
        card = archive.read("README.md").decode()
    assert config["base_model_name_or_path"] == "Tiny Llama"
    assert tiny_base_model.local_path not in json.dumps(config)
    assert "Don't mix codes & colours." in card and "&#x27;" not in card and "&amp;" not in card
    assert r"\<script\>alert(1)\</script\> \*bold\* \[link\](http://x)" in card
    assert "\n\\- a list?" in card
    assert "# Codes & Colours (version 1)" in card
    assert '- "codes: colours"\n' in card  # a YAML string, not a mapping
    assert card.startswith("---\nbase_model: Tiny Llama\nlibrary_name: peft\n")


def test_the_code_version_baked_into_an_image_is_what_manifests_sign(settings):
    settings.CODE_VERSION = "0123abc"  # the image's MF_CODE_VERSION: it has no .git to ask
    assert publish.code_version() == "0123abc"
