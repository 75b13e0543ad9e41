"""Influence in the product: a job measures it, the manifest carries it, pages show it, rewards split by it."""

import csv
import io
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest
from django.core.management import call_command
from django.urls import reverse

from accounts.contributors import contributor_pseudonym
from attribution.aggregation import AGGREGATIONS
from attribution.verify import VerificationError, _check_influence
from datanets import services as datanet_services
from datanets.models import Record
from publishing import services
from publishing.models import Adapter
from testkit import synthetic
from tests.factories import DatanetFactory, MembershipFactory, UserFactory
from tests.publishing.conftest import run_job
from training.models import RecordInfluence

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def contributors(db):
    return [UserFactory(username=f"expert{i}") for i in range(3)]


@pytest.fixture
def influenced_adapter(
    transactional_db, tiny_base_model, trainer_user, contributors, django_capture_on_commit_callbacks
):
    """Three contributors, each teaching a generated task; trained, attributed and published for real."""
    datanet = DatanetFactory(name="Realms", visibility="public", created_by=trainer_user)
    for task, user in zip(synthetic.make_tasks(3, 8, seed=0), contributors, strict=True):
        for thing, value in task.facts:
            datanet_services.record_create(datanet=datanet, contributor=user, value=task.record(thing, value))
    Record.objects.filter(datanet=datanet).update(status="approved")
    version = datanet_services.version_publish(datanet=datanet, by=UserFactory(is_staff=True))
    job = run_job(
        trainer_user,
        tiny_base_model,
        version,
        django_capture_on_commit_callbacks,
        name="Realms",
        influence_methods=["datainf", "tracin", "tracincp"],
    )
    team = MembershipFactory(user=trainer_user, role="owner").team
    return services.adapter_publish(job=job, by=trainer_user, team=team, name="Realms Expert", visibility="team")


def test_a_job_measures_influence_and_the_signed_manifest_carries_it(influenced_adapter, contributors, tmp_path):
    adapter, job = influenced_adapter, influenced_adapter.job
    assert set(job.influence["methods"]) == {"datainf", "tracin", "tracincp"}
    assert job.influence["default_method"] == "datainf"  # the first asked for
    assert job.metrics["attribution"]["done"] == job.metrics["attribution"]["total"] > 0
    assert any("influence" in line for line in job.logs)
    trained = job.influence["methods"]["datainf"]["parameters"]["train_examples"]
    assert RecordInfluence.objects.filter(job=job, method="datainf").count() == trained
    assert RecordInfluence.objects.filter(job=job, method="tracin").count() == trained
    assert RecordInfluence.objects.filter(job=job, method="tracincp").count() == trained  # gathered while training

    influence = adapter.manifest["influence"]
    schema = json.loads((ROOT / "attribution" / "manifest.schema.json").read_text())
    jsonschema.validate(adapter.manifest, schema)
    assert influence["method"] == "datainf" and "DataInf" in influence["reference"]
    assert influence["parameters"]["projection"] == "none" and influence["recomputed_from_version"] is None
    ids = {contributor_pseudonym(user.pk) for user in contributors}
    assert {row["id"] for row in influence["contributors"]} == ids
    assert abs(sum(row["share"] for row in influence["contributors"]) - 1) < 1e-5

    zip_path = tmp_path / "adapter.zip"
    with services.adapter_download_counted(adapter=adapter) as handle:
        zip_path.write_bytes(handle.read())
    result = subprocess.run(
        [sys.executable, "-m", "attribution.verify", str(zip_path)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "INFLUENCE by datainf" in result.stdout

    contributors_by_id = {c["id"]: c for c in adapter.manifest["contributors"]}
    broken = json.loads(json.dumps(influence))
    broken["contributors"][0]["share"] /= 2
    broken["contributors"][0]["share_ci"] = [0.0, 1.0]  # inside its interval: only the sum is wrong
    with pytest.raises(VerificationError, match="add up to"):
        _check_influence(broken, contributors_by_id)
    broken = json.loads(json.dumps(influence))
    broken["contributors"][0]["id"] = "c-0000000000000000"
    with pytest.raises(VerificationError, match="without records"):
        _check_influence(broken, contributors_by_id)
    assert influence["aggregation"] == AGGREGATIONS[influence["parameters"]["aggregation"]]
    broken = json.loads(json.dumps(influence))
    broken["aggregation"] = "whatever favours the publisher"
    with pytest.raises(VerificationError, match="aggregation rule"):
        _check_influence(broken, contributors_by_id)
    broken = json.loads(json.dumps(influence))
    broken["method"] = "whoever asked first"
    with pytest.raises(VerificationError, match="no method"):
        _check_influence(broken, contributors_by_id)


def test_pages_show_influence_beside_token_shares(client, influenced_adapter, trainer_user, contributors):
    adapter = influenced_adapter
    client.force_login(trainer_user)
    page = client.get(reverse("adapter_detail", args=[adapter.slug, adapter.version])).content.decode()
    assert "Influence share" in page and 'id="influence-method">datainf' in page
    assert page.count('class="influence-share"') == 3
    assert 'id="reward-split"' not in page  # staff only

    job_page = client.get(reverse("job_detail", args=[adapter.job.pk])).content.decode()
    assert 'id="influence"' in job_page and contributor_pseudonym(contributors[0].pk) in job_page

    client.force_login(contributors[1])
    mine = client.get(reverse("my_adapter_contributions")).content.decode()
    row = next(
        r for r in adapter.manifest["influence"]["contributors"] if r["id"] == contributor_pseudonym(contributors[1].pk)
    )
    assert f"{row['share']:.3f}" in mine and "datainf" in mine


def test_a_reward_is_split_by_influence_and_adds_up_exactly(client, influenced_adapter, contributors):
    adapter = influenced_adapter
    client.force_login(UserFactory(is_staff=True))
    page = client.get(reverse("adapter_detail", args=[adapter.slug, adapter.version])).content.decode()
    assert 'id="reward-split"' in page
    url = reverse("adapter_rewards", args=[adapter.slug, adapter.version])
    response = client.get(url, {"amount": "1000.01"})
    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert {r["username"] for r in rows} == {u.username for u in contributors}
    assert sum(Decimal(r["payout"]) for r in rows) == Decimal("1000.01")
    shares = {r["contributor"]: float(r["influence_share"]) for r in rows}
    biggest = max(shares, key=shares.get)
    assert max(rows, key=lambda r: Decimal(r["payout"]))["contributor"] == biggest

    for bad in ("", "-5", "abc", "1.001"):
        response = client.get(url, {"amount": bad})
        assert response.status_code == 302, bad


def test_reattribution_publishes_a_new_version_and_leaves_the_old_one(influenced_adapter):
    adapter = influenced_adapter
    before = adapter.manifest_sha256
    out = io.StringIO()
    call_command("reattribute_adapter", adapter.slug, "--method", "tracin", "--projection-dim", "64", stdout=out)
    assert "Published realms-expert v2 with tracin influence" in out.getvalue()
    new = Adapter.objects.get(slug=adapter.slug, version=2)
    assert new.manifest["influence"]["method"] == "tracin"
    assert new.manifest["influence"]["recomputed_from_version"] == 1
    assert new.manifest["influence"]["parameters"]["projection"] == "countsketch-64"
    assert new.manifest["contributors"] == adapter.manifest["contributors"]
    adapter.refresh_from_db()
    assert adapter.manifest_sha256 == before and adapter.manifest["influence"]["method"] == "datainf"
    assert RecordInfluence.objects.filter(job=adapter.job, method="tracin").exists()
