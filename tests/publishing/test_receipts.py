"""A contributor's receipt: always theirs to open, downloadable, and checked offline without the adapter."""

import json
import subprocess
import sys
from pathlib import Path

from django.urls import reverse

from datanets.models import Record
from publishing import selectors
from tests.factories import UserFactory

ROOT = Path(__file__).resolve().parents[2]


def verify(*args):
    return subprocess.run(
        [sys.executable, "-m", "attribution.verify", *map(str, args)], cwd=ROOT, capture_output=True, text=True
    )


def test_a_contributor_opens_and_verifies_a_receipt_for_a_team_only_adapter(client, adapter, tmp_path):
    author = Record.objects.filter(adapter_uses__adapter=adapter).first().contributor
    client.force_login(author)
    assert client.get(reverse("adapter_detail", args=[adapter.slug, adapter.version])).status_code == 404
    mine = client.get(reverse("my_adapter_contributions")).content.decode()
    receipt_url = reverse("receipt_detail", args=[adapter.slug, adapter.version])
    assert f'href="{receipt_url}"' in mine
    assert f'href="{reverse("adapter_detail", args=[adapter.slug, adapter.version])}"' not in mine  # hidden from them

    page = client.get(receipt_url).content.decode()
    assert adapter.manifest_sha256 in page and "visible to" in page
    training, held_out = adapter.job.evaluation["train_examples"], adapter.job.evaluation["eval_examples"]
    assert f"{training} used for training, {held_out} held out for evaluation only" in page
    influence = next(c for c in adapter.manifest["influence"]["contributors"])
    assert f'id="influence-share">{influence["share"]:.3f}' in page

    response = client.get(reverse("receipt_download", args=[adapter.slug, adapter.version]))
    receipt = response.json()
    assert response["Content-Disposition"].endswith('-receipt.json"')
    assert receipt["manifest_sha256"] == adapter.manifest_sha256 and len(receipt["records"]) == 24
    assert {row["use"] for row in receipt["records"]} == {"training", "evaluation"}
    path = tmp_path / "receipt.json"
    path.write_bytes(response.content)
    result = verify("--receipt", path)
    assert result.returncode == 0, result.stderr
    assert "signature valid, 24 records each proven in its Datanet version" in result.stdout

    record = Record.objects.filter(contributor=author).first()
    (tmp_path / "mine.json").write_text(json.dumps({"content": record.content}))
    result = verify("--receipt", path, "--record", tmp_path / "mine.json")
    assert result.returncode == 0 and f"INCLUDED record {record.content_hash}" in result.stdout
    (tmp_path / "other.json").write_text(json.dumps({"instruction": "Never seen", "input": "", "output": "x"}))
    assert verify("--receipt", path, "--record", tmp_path / "other.json").returncode == 7
    key = tmp_path / "key.pem"
    key.write_bytes(client.get("/api/v1/signing-key").content)
    assert verify("--receipt", path, "--public-key", key).returncode == 0

    inflated = {**receipt, "contributor": {**receipt["contributor"], "share_by_tokens": 0.99}}
    (tmp_path / "inflated.json").write_text(json.dumps(inflated))
    result = verify("--receipt", tmp_path / "inflated.json")
    assert result.returncode == 4 and "signature" in result.stderr
    dropped = {**receipt, "records": receipt["records"][1:]}
    (tmp_path / "dropped.json").write_text(json.dumps(dropped))
    assert verify("--receipt", tmp_path / "dropped.json").returncode == 4


def test_the_receipt_matches_the_adapter_zip(client, adapter, trainer_user, tmp_path):
    author = Record.objects.filter(adapter_uses__adapter=adapter).first().contributor
    client.force_login(author)
    (tmp_path / "receipt.json").write_bytes(client.get(reverse("receipt_download", args=[adapter.slug, 1])).content)
    client.force_login(trainer_user)
    zip_path = tmp_path / "adapter.zip"
    zip_path.write_bytes(b"".join(client.get(reverse("adapter_download", args=[adapter.slug, 1])).streaming_content))
    result = verify("--receipt", tmp_path / "receipt.json", zip_path)
    assert result.returncode == 0 and "matches the zip" in result.stdout, result.stderr


def test_nobody_else_opens_a_contributors_receipt(client, adapter, trainer_user):
    url = reverse("receipt_detail", args=[adapter.slug, adapter.version])
    assert client.get(url).status_code == 302  # to log in
    for user in (UserFactory(), trainer_user, UserFactory(is_staff=True)):
        client.force_login(user)
        assert client.get(url).status_code == 404
        assert client.get(reverse("receipt_download", args=[adapter.slug, adapter.version])).status_code == 404
    assert client.get(reverse("receipt_detail", args=["no-such", 1])).status_code == 404
    assert selectors.contributions_in_adapters(trainer_user, []) == []
