"""Publish a tiny-model adapter, download it through the API with a token, verify it offline, load it."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from django.urls import reverse
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from accounts.contributors import contributor_pseudonym
from datanets.models import LedgerEntry, Record
from modelfactory.exceptions import ApplicationError
from publishing import services
from publishing.models import Adapter, AdapterRecord

ROOT = Path(__file__).resolve().parents[2]


def verify(zip_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "attribution.verify", str(zip_path), *args], cwd=ROOT, capture_output=True, text=True
    )


def manifest_rows(zip_path):
    with zipfile.ZipFile(zip_path) as archive:
        return [json.loads(line) for line in archive.read("records.jsonl").splitlines()]


def download_with_token(client, adapter, user, scope="download"):
    _, secret = services.token_create(user=user, name="ci", scope=scope)
    url = f"/api/v1/adapters/{adapter.slug}/versions/{adapter.version}/download"
    return client.get(url, headers={"Authorization": f"Bearer {secret}"})


def test_publish_download_verify_and_load(client, adapter, trainer_user, tiny_base_model, tmp_path):
    manifest = adapter.manifest
    import jsonschema

    jsonschema.validate(manifest, json.loads((ROOT / "attribution" / "manifest.schema.json").read_text()))
    assert manifest["schema"] == "modelfactory.manifest/v1" and manifest["influence"]["method"] == "datainf"
    assert manifest["base_model"]["weights_sha256"] == tiny_base_model.weights_sha256
    held_out = adapter.job.evaluation["eval_examples"]
    assert manifest["held_out"]["records"] == held_out > 0
    assert manifest["totals"]["records"] == 24 - held_out == sum(c["records"] for c in manifest["contributors"])
    assert abs(sum(c["share_by_tokens"] for c in manifest["contributors"]) - 1) < 1e-6
    assert {f["path"] for f in manifest["files"]} == {
        "README.md",
        "records.jsonl",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
    }
    assert AdapterRecord.objects.filter(adapter=adapter).count() == 24
    assert LedgerEntry.objects.filter(event="adapter.published").count() == 1

    response = download_with_token(client, adapter, trainer_user)
    assert response.status_code == 200
    zip_path = tmp_path / "codes-expert-v1.zip"
    zip_path.write_bytes(b"".join(response.streaming_content))
    assert Adapter.objects.get(pk=adapter.pk).download_count == 1

    result = verify(zip_path)
    assert result.returncode == 0, result.stderr
    assert (
        "signature valid" in result.stdout
        and f"{24 - held_out} training records from 1 contributors and {held_out} held-out records consistent"
        in result.stdout
    )

    key = tmp_path / "key.pem"
    key.write_bytes(client.get("/api/v1/signing-key").content)
    assert verify(zip_path, "--public-key", str(key)).returncode == 0

    trained = {r["content_hash"] for r in manifest_rows(zip_path) if r["role"] == "training"}
    used = Record.objects.filter(adapter_uses__adapter=adapter, content_hash__in=trained).first()
    (tmp_path / "used.json").write_text(json.dumps({"content": used.content}))
    result = verify(zip_path, "--record", str(tmp_path / "used.json"))
    assert result.returncode == 0 and f"INCLUDED record {used.content_hash}" in result.stdout
    (tmp_path / "unused.json").write_text(json.dumps({"instruction": "Never seen", "input": "", "output": "x"}))
    result = verify(zip_path, "--record", str(tmp_path / "unused.json"))
    assert result.returncode == 7 and "was not part of this adapter's training data" in result.stderr

    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(tmp_path / "unzipped")
        card = archive.read("README.md").decode()
    assert card.startswith("---\nbase_model: Tiny Llama\nlibrary_name: peft\n")
    base = AutoModelForCausalLM.from_pretrained(tiny_base_model.local_path)
    model = PeftModel.from_pretrained(base, tmp_path / "unzipped" / "adapter")
    tokenizer = AutoTokenizer.from_pretrained(tiny_base_model.local_path)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What does code 2 mean?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]


def rewrite(source: Path, target: Path, change):
    """Copy a zip entry by entry, letting ``change(name, data)`` alter or drop entries."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for name in src.namelist():
            result = change(name, src.read(name))
            if result is not None:
                dst.writestr(*result) if isinstance(result, tuple) else dst.writestr(name, result)
    return target


@pytest.fixture
def zip_path(client, adapter, trainer_user, tmp_path):
    path = tmp_path / "good.zip"
    path.write_bytes(b"".join(download_with_token(client, adapter, trainer_user).streaming_content))
    return path


def flip_byte(data: bytes, at: int = 100) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


TAMPERING = [
    ("weights byte", 5, "adapter/adapter_model.safetensors does not match"),
    ("card byte", 5, "README.md does not match"),
    ("records byte", 5, "records.jsonl does not match"),
    ("edited manifest", 4, "signature does not match"),
    ("wrong signature", 4, "signature does not match"),
    ("path traversal", 3, "unsafe entry name"),
    ("extra file", 3, "not listed in the manifest"),
    ("missing file", 5, "missing from the zip"),
]


def test_tampered_zips_fail_with_a_named_reason(zip_path, tmp_path):
    for case, code, message in TAMPERING:  # one published adapter for every case: training is the slow part
        check_tampering(zip_path, tmp_path, case, code, message)


def check_tampering(zip_path, tmp_path, case, code, message):
    def change(name, data):
        if case == "weights byte" and name == "adapter/adapter_model.safetensors":
            return flip_byte(data)
        if case == "card byte" and name == "README.md":
            return flip_byte(data, 10)
        if case == "records byte" and name == "records.jsonl":
            return flip_byte(data, 20)
        if case == "edited manifest" and name == "manifest.json":
            manifest = json.loads(data)
            manifest["contributors"][0]["share_by_tokens"] = 0.5
            return json.dumps(manifest).encode()
        if case == "wrong signature" and name == "manifest.sig":
            import base64

            return base64.b64encode(b"\x00" * 64)
        if case == "missing file" and name == "README.md":
            return None
        return data

    bad = rewrite(zip_path, tmp_path / f"bad-{case.replace(' ', '-')}.zip", change)
    if case in ("path traversal", "extra file"):
        with zipfile.ZipFile(bad, "a") as archive:
            archive.writestr("../../evil.sh" if case == "path traversal" else "notes.txt", b"x")
    result = verify(bad)
    assert result.returncode == code, (case, result.stdout, result.stderr)
    assert message in result.stderr, case


def test_a_manifest_swapped_from_another_adapter_fails(zip_path, succeeded_job, trainer_user, team, client, tmp_path):
    other = services.adapter_publish(job=succeeded_job, by=trainer_user, team=team, name="Codes Expert")
    assert other.version == 2  # a new version supersedes; v1 is unchanged
    other_zip = tmp_path / "other.zip"
    other_zip.write_bytes(b"".join(download_with_token(client, other, trainer_user).streaming_content))
    with zipfile.ZipFile(other_zip) as archive:
        swapped = {n: archive.read(n) for n in ("manifest.json", "manifest.sig")}
    bad = rewrite(zip_path, tmp_path / "swapped.zip", lambda name, data: swapped.get(name, data))
    result = verify(bad)
    assert result.returncode == 5 and "README.md does not match" in result.stderr  # signed, but not for these files


def test_not_a_zip_and_a_wrong_pinned_key(zip_path, tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    assert verify(junk).returncode == 2
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "other.pem").write_bytes(other)
    result = verify(zip_path, "--public-key", str(tmp_path / "other.pem"))
    assert result.returncode == 4 and "not the pinned public key" in result.stderr


def test_only_the_owner_publishes_a_succeeded_job(succeeded_job, team):
    from tests.factories import MembershipFactory, UserFactory

    stranger = MembershipFactory(team=team, role="admin").user
    with pytest.raises(ApplicationError, match="Only the job's owner"):
        services.adapter_publish(job=succeeded_job, by=stranger, team=team, name="Mine now")
    with pytest.raises(ApplicationError, match="Only the job's owner"):
        services.adapter_publish(job=succeeded_job, by=succeeded_job.owner, team=MembershipFactory().team, name="x")
    assert not Adapter.objects.exists()
    assert UserFactory  # factories import check


def test_contributor_sees_their_records_in_the_adapter(client, adapter):
    author = Record.objects.filter(adapter_uses__adapter=adapter).first().contributor
    client.force_login(author)
    page = client.get(reverse("my_adapter_contributions")).content.decode()
    assert "Codes Expert v1" in page and "100%" in page
    assert contributor_pseudonym(author.pk) in page


def test_openapi_document_and_token_rules(client, adapter, trainer_user):
    spec = client.get("/api/v1/openapi.json").json()
    assert (
        "/api/v1/adapters" in spec["paths"] and "/api/v1/adapters/{slug}/versions/{version}/download" in spec["paths"]
    )
    assert client.get("/api/v1/adapters").status_code == 401
    read_token, read_secret = services.token_create(user=trainer_user, name="read", scope="read")
    auth = {"Authorization": f"Bearer {read_secret}"}
    listing = client.get("/api/v1/adapters", headers=auth).json()
    assert [item["slug"] for item in listing["items"]] == ["codes-expert"]
    held_out = adapter.job.evaluation["eval_examples"]
    assert (
        client.get("/api/v1/adapters/codes-expert", headers=auth).json()["manifest"]["totals"]["records"]
        == 24 - held_out
    )
    download = client.get("/api/v1/adapters/codes-expert/versions/1/download", headers=auth)
    assert download.status_code == 403 and "download scope" in download.json()["detail"]
    assert client.get(f"/api/v1/jobs/{adapter.job_id}", headers=auth).json()["status"] == "succeeded"
    services.token_revoke(token=read_token, by=trainer_user)
    assert client.get("/api/v1/adapters", headers=auth).status_code == 401
    read_token.refresh_from_db()
    assert read_token.key_sha256 != read_secret and read_secret not in str(read_token.__dict__)


def test_a_contributor_who_opts_in_is_named_by_handle(client, succeeded_job, trainer_user, team):
    author = Record.objects.filter(versions__in=succeeded_job.datanet_versions.all()).first().contributor
    client.force_login(author)
    client.post(reverse("my_adapter_contributions"), {"show_handle": "on"})
    adapter = services.adapter_publish(job=succeeded_job, by=trainer_user, team=team, name="Named")
    assert adapter.manifest["contributors"][0]["handle"] == author.username
    assert author.username in adapter.manifest["contributors"][0].values()
