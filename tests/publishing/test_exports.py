"""Exports of a published adapter, built by a real worker from a really trained (QLoRA) tiny model's adapter:
the merged model answers as base + adapter, the GGUF files answer as the merged model when transformers
loads them back, and every zip verifies offline."""

import json
import zipfile

from django.urls import reverse

from attribution.verify import main as verify_main
from exporting.compare import PROMPTS, greedy_tokens, same_answers, same_prompt_texts
from publishing.models import AdapterExport
from tests.conftest import WorkerProcess, database_url_for_workers
from tests.waiting import wait_until

POLL = {"HX-Request": "true"}


def build_on_a_worker(client, adapter, tmp_path) -> AdapterExport:
    page = reverse("adapter_detail", args=[adapter.slug, adapter.version])
    assert "Build the exports" in client.get(page).content.decode()
    response = client.post(reverse("adapter_export", args=[adapter.slug, adapter.version]))
    assert response.status_code == 302 and response.url == page + "#exports"
    client.post(reverse("adapter_export", args=[adapter.slug, adapter.version]))  # asked twice: built once
    export = AdapterExport.objects.get(adapter=adapter)
    assert "Waiting for a worker" in client.get(page).content.decode()
    assert client.get(f"{page}?poll=exports", headers=POLL).status_code == 200  # polling while it waits
    worker = WorkerProcess(database_url_for_workers(), tmp_path / "worker.log", queues="default")
    try:
        return wait_until(
            lambda: AdapterExport.objects.get(pk=export.pk),
            lambda e: e.finished,
            timeout=300,
            describe=lambda: worker.log_path.read_text()[-3000:],
        )
    finally:
        worker.stop()


def download(client, adapter, fmt, dest):
    response = client.get(reverse("adapter_export_download", args=[adapter.slug, adapter.version, fmt]))
    assert response.status_code == 200, fmt
    zip_path = dest / f"{fmt}.zip"
    zip_path.write_bytes(b"".join(response.streaming_content))
    zipfile.ZipFile(zip_path).extractall(dest / fmt)
    return zip_path, dest / fmt


def test_a_tiny_adapter_exports_to_merged_and_gguf_that_answer_alike(client, adapter, trainer_user, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    client.force_login(trainer_user)
    export = build_on_a_worker(client, adapter, tmp_path)
    assert export.status == "succeeded", export.error
    assert set(export.files) == {"merged", "gguf-f16", "gguf-q8_0"}
    page = client.get(reverse("adapter_detail", args=[adapter.slug, adapter.version]))
    assert page.content.decode().count('class="export-download"') == 3
    poll = client.get(reverse("adapter_detail", args=[adapter.slug, adapter.version]) + "?poll=exports", headers=POLL)
    assert poll.status_code == 286  # ready: the page stops polling

    adapter_zip = tmp_path / "adapter.zip"
    response = client.get(reverse("adapter_download", args=[adapter.slug, adapter.version]))
    adapter_zip.write_bytes(b"".join(response.streaming_content))
    zipfile.ZipFile(adapter_zip).extractall(tmp_path / "adapter")
    unpacked = {fmt: download(client, adapter, fmt, tmp_path) for fmt in export.files}
    for fmt, (zip_path, directory) in unpacked.items():
        assert verify_main([str(zip_path), "--adapter", str(adapter_zip)]) == 0, fmt
        assert verify_main([str(directory)]) == 0, fmt

    base_dir = adapter.base_model.local_path
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir)  # float32, as the export merges into
    tuned = greedy_tokens(PeftModel.from_pretrained(base, tmp_path / "adapter" / "adapter").eval(), tokenizer)
    merged_dir = unpacked["merged"][1]
    merged_tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    merged = greedy_tokens(AutoModelForCausalLM.from_pretrained(merged_dir), merged_tokenizer)
    assert same_answers(merged, tuned) == len(PROMPTS)
    assert same_prompt_texts(tokenizer, merged_tokenizer) == len(PROMPTS)

    for fmt, at_least in (("gguf-f16", len(PROMPTS)), ("gguf-q8_0", 18)):
        directory = unpacked[fmt][1]
        gguf_name = next(p.name for p in directory.glob("*.gguf"))
        gguf_tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_name)
        answers = greedy_tokens(AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf_name), gguf_tokenizer)
        assert same_answers(answers, merged) >= at_least, fmt
        assert same_prompt_texts(merged_tokenizer, gguf_tokenizer) == len(PROMPTS), fmt
        modelfile = (directory / "Modelfile").read_text()
        assert f"FROM ./{gguf_name}" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
        assert "TEMPLATE" in modelfile and "{{ .Content }}<|im_end|>" in modelfile
    q8_manifest = json.loads((unpacked["gguf-q8_0"][1] / "export_manifest.json").read_text())
    assert q8_manifest["export"]["quantisation"] == "q8_0" and q8_manifest["export"]["rounding"] == "gptq"
