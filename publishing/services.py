"""Publishing use cases: publish a succeeded job as a signed adapter zip, count downloads, API tokens."""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import tempfile
import zipfile
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.text import slugify

from accounts.contributors import contributor_handles, contributor_pseudonym
from attribution import influence as influence_lib
from attribution import manifest as manifest_lib
from datanets.ledger import ledger_append
from modelfactory.exceptions import ApplicationError
from training import jobs as training_jobs
from training.jobs.influence import influence_by_method, influence_recompute
from training.jobs.outputs import held_out_hashes as _held_out_hashes

from . import policy, signing
from .models import Adapter, AdapterRecord, ApiToken


def code_version() -> str:
    """The commit the code was built from: baked into the image (MF_CODE_VERSION), else asked of git."""
    if settings.CODE_VERSION and settings.CODE_VERSION != "unknown":
        return settings.CODE_VERSION
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _stage_adapter_files(outputs: dict, tmp: Path, base_model) -> dict[str, Path]:
    """Copy the adapter files out of storage; its config names the base model as the catalogue does,
    not by the path it has on the workers (the weights hash is in the manifest)."""
    files: dict[str, Path] = {}
    for inside in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors"):
        local = tmp / inside
        local.parent.mkdir(parents=True, exist_ok=True)
        with default_storage.open(outputs[inside]) as source, open(local, "wb") as target:
            for chunk in source.chunks():
                target.write(chunk)
        files[inside] = local
    config_path = files["adapter/adapter_config.json"]
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_model.name
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return files


def _training_rows(job, held_out: set[str]) -> tuple[list[dict], list[dict], dict[str, str], list[int]]:
    """records.jsonl rows, each with its role: "training", or "evaluation" for a held-out record."""
    versions = list(job.datanet_versions.select_related("datanet").order_by("datanet__slug", "number"))
    handles = contributor_handles()
    rows, datanets, record_ids = [], [], []
    for version in versions:
        datanets.append(
            {
                "slug": version.datanet.slug,
                "name": version.datanet.name,
                "version": version.number,
                "merkle_root": version.merkle_root,
                "license": version.license,
                "records": version.record_count,
                "tokens": version.token_count,
            }
        )
        records = version.records.values_list("id", "content_hash", "contributor_id", "token_count")
        for record_id, content_hash, contributor_id, tokens in records.iterator(chunk_size=5000):
            record_ids.append(record_id)
            rows.append(
                {
                    "content_hash": content_hash,
                    "contributor": contributor_pseudonym(contributor_id),
                    "datanet": version.datanet.slug,
                    "version": version.number,
                    "tokens": tokens,
                    "role": "evaluation" if content_hash in held_out else "training",
                }
            )
    return rows, datanets, handles, record_ids


METHOD_REFERENCES = {
    "datainf": "DataInf: Kwon, Wu, Wu and Zou, 'DataInf: Efficiently Estimating Data Influence in LoRA-tuned LLMs "
    "and Diffusion Models', 2023",
    "tracin": "TracIn: Pruthi, Liu, Kale and Sundararajan, 'Estimating Training Data Influence by Tracing Gradient "
    "Descent', 2020 (final checkpoint)",
}


def manifest_evaluation(evaluation: dict) -> dict:
    """Loss and task scores (accuracy, exact match, F1 of base and fine-tune per question set) for the manifest."""
    task = {
        name: {"base": result["base"], "tuned": result["tuned"]}
        for name, result in (evaluation.get("task") or {}).items()
    }
    keys = ("base", "tuned", "loss_on", "train_examples", "eval_examples", "steps", "best_step")
    return {**{k: evaluation.get(k) for k in keys}, "task": task}


def manifest_influence(job, *, method: str | None = None, recomputed_from: int | None = None) -> dict | None:
    """The manifest's influence section from the job's stored influence, contributors as pseudonyms."""
    method, data = influence_by_method(job, method)
    if data is None:
        return None
    return {
        "method": method,
        "reference": METHOD_REFERENCES[method],
        "parameters": data["parameters"],
        "computed_at": data["computed_at"],
        "aggregation": "per contributor: the sum of its records' scores (mean over held-out examples); shares: "
        "positive parts normalised to 1; 95% intervals: bootstrap over the held-out examples",
        "recomputed_from_version": recomputed_from,
        "contributors": [
            {
                "id": contributor_pseudonym(int(row["contributor"])),
                "records": row["records"],
                "score": round(row["score"], 9),
                "score_ci": [round(x, 9) for x in row["score_ci"]],
                "share": round(row["share"], 6),
                "share_ci": [round(x, 6) for x in row["share_ci"]],
            }
            for row in data["contributors"]
        ],
    }


def adapter_publish(
    *,
    job,
    by,
    team,
    name: str,
    description: str = "",
    visibility: str = "team",
    domain: str = "",
    influence_method: str | None = None,
    recomputed_from: int | None = None,
) -> Adapter:
    if not policy.can_publish_job(by, job, team):
        raise ApplicationError(
            "Only the job's owner publishes it, as an owner or admin of the team, once it has succeeded."
        )
    refusal = policy.publication_refusal(job, team, visibility)
    if refusal:
        raise ApplicationError(refusal)
    slug = slugify(name)
    if not slug:
        raise ApplicationError("An adapter name needs at least one letter or digit.")
    other_team = Adapter.objects.filter(slug=slug).exclude(team=team).exists()
    if other_team:
        raise ApplicationError(f"The name {slug!r} belongs to another team's adapter; choose another.")
    outputs = training_jobs.job_outputs(job)
    if "adapter/adapter_model.safetensors" not in outputs:
        raise ApplicationError("This job's adapter files are missing from storage.")
    version = (
        Adapter.objects.filter(slug=slug).order_by("-version").values_list("version", flat=True).first() or 0
    ) + 1
    rows, datanets, handles, record_ids = _training_rows(job, _held_out_hashes(outputs))
    now = timezone.now()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = _stage_adapter_files(outputs, tmp, job.base_model)
        (tmp / "records.jsonl").write_bytes(manifest_lib.records_jsonl(rows))
        files["records.jsonl"] = tmp / "records.jsonl"
        contributors, totals = manifest_lib.contributor_summary(rows)
        held_out = manifest_lib.held_out_summary(rows)
        for contributor in contributors:
            contributor["handle"] = handles.get(contributor["id"])
        influence = manifest_influence(job, method=influence_method, recomputed_from=recomputed_from)
        if influence_method and influence is None:
            raise ApplicationError(f"No {influence_method} influence has been computed for this job.")
        base = job.base_model
        base_info = {"name": base.name, "architecture": base.architecture, "parameters": base.parameter_count,
                     "weights_sha256": base.weights_sha256, "license": base.license}  # fmt: skip
        licences = sorted({d["license"] for d in datanets})
        card = render_to_string("publishing/model_card.md", {
            "name": name, "slug": slug, "version": version, "description": description, "domain": domain,
            "base_model": base_info, "method": (job.evaluation or {}).get("method") or job.method, "config": job.config, "datanets": datanets,
            "evaluation": job.evaluation, "licences": licences, "license": licences[0] if len(licences) == 1 else "other",
            "contributors": contributors, "totals": totals, "held_out": held_out, "influence": influence,
            "influence_by_id": {c["id"]: c for c in (influence or {}).get("contributors", [])},
        })  # fmt: skip
        (tmp / "README.md").write_text(card, encoding="utf-8")
        files["README.md"] = tmp / "README.md"
        public_pem = signing.public_key_pem()
        manifest = manifest_lib.build_manifest(
            adapter={"slug": slug, "name": name, "version": version, "description": description},
            files=files,
            base_model=base_info,
            datanets=datanets,
            records=rows,
            handles=handles,
            training={
                "job_id": job.pk,
                "method": (job.evaluation or {}).get("method") or job.method,
                "preset": job.preset,
                "config": job.config,
                "code_version": code_version(),
            },  # fmt: skip
            evaluation=manifest_evaluation(job.evaluation),
            influence=influence,
            timestamps={
                "trained_at": job.finished_at.isoformat() if job.finished_at else None,
                "published_at": now.isoformat(),
            },
            public_key_pem=public_pem,
        )
        zip_path = tmp / f"{slug}-v{version}.zip"
        with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for inside, local in sorted(files.items()):
                archive.write(local, inside)
            archive.writestr("manifest.json", manifest_lib.canonical(manifest))
            archive.writestr("manifest.sig", manifest_lib.sign(manifest, signing.private_key()))
            archive.writestr("signing_key.pem", public_pem)
        with open(zip_path, "rb") as handle:
            zip_name = default_storage.save(f"adapters/{slug}/v{version}/{zip_path.name}", File(handle))
        zip_bytes = zip_path.stat().st_size
    with transaction.atomic():
        adapter = Adapter.objects.create(
            slug=slug, version=version, name=name.strip(), description=description, domain=domain.strip(),
            visibility=visibility, team=team, job=job, base_model=job.base_model, manifest=manifest,
            manifest_sha256=hashlib.sha256(manifest_lib.canonical(manifest)).hexdigest(), zip_name=zip_name,
            zip_bytes=zip_bytes, published_by=by,
        )  # fmt: skip
        adapter.datanet_versions.set(job.datanet_versions.all())
        AdapterRecord.objects.bulk_create(
            [AdapterRecord(adapter=adapter, record_id=pk) for pk in sorted(set(record_ids))], batch_size=5000
        )
        ledger_append(
            event="adapter.published",
            payload={"adapter": slug, "version": version, "manifest_sha256": adapter.manifest_sha256, "job_id": job.pk},
            actor=by,
        )
        from serving.tasks import span_index_build_task  # the span index for answer attribution

        span_index_build_task.delay_on_commit(adapter.pk)
    return adapter


def adapter_reattribute(*, adapter: Adapter, method: str, projection_dim: int = 0, progress=None) -> Adapter:
    """Measure influence for the adapter's job again with ``method`` and publish the result as the next
    version of the adapter (same files and data, a new signed manifest); published versions never change."""
    influence_recompute(job=adapter.job, methods=[method], projection_dim=projection_dim, progress=progress)
    return adapter_publish(
        job=adapter.job,
        by=adapter.published_by,
        team=adapter.team,
        name=adapter.name,
        description=adapter.description,
        visibility=adapter.visibility,
        domain=adapter.domain,
        influence_method=method,
        recomputed_from=adapter.version,
    )


def adapter_card(adapter: Adapter) -> str:
    """The model card, read from the signed zip itself so the page shows exactly what was signed."""
    with default_storage.open(adapter.zip_name, "rb") as handle, zipfile.ZipFile(handle) as archive:
        return archive.read("README.md").decode("utf-8")


def adapter_download_counted(*, adapter: Adapter):
    """Open the signed zip for streaming and count the download."""
    Adapter.objects.filter(pk=adapter.pk).update(download_count=F("download_count") + 1)
    return default_storage.open(adapter.zip_name, "rb")


def reward_split(*, adapter: Adapter, amount: Decimal) -> list[dict]:
    """Payouts per contributor by influence share, in cents rounded so that they add up to the amount."""
    influence = adapter.manifest.get("influence")
    if not influence:
        raise ApplicationError("This adapter has no influence measurement to split a reward by.")
    if amount <= 0 or amount.as_tuple().exponent < -2:
        raise ApplicationError("Enter a positive amount with at most two decimals.")
    shares = {c["id"]: c["share"] for c in influence["contributors"]}
    cents = influence_lib.payouts(int(amount * 100), shares)
    users = {
        contributor_pseudonym(pk): username
        for pk, username in adapter.used_records.values_list("record__contributor_id", "record__contributor__username")
        .distinct()
        .iterator()
    }
    return [
        {
            "contributor": cid,
            "username": users.get(cid, ""),
            "share": shares[cid],
            "payout": (Decimal(cents[cid]) / 100).quantize(Decimal("0.01")),
        }
        for cid in sorted(shares, key=lambda c: (-cents[c], c))
    ]


# API tokens -----------------------------------------------------------------------------------

TOKEN_PREFIX = "mf_"


def token_create(*, user, name: str, scope: str, team=None) -> tuple[ApiToken, str]:
    """Returns the token row and the secret, which is shown once and stored only as a hash."""
    if team is not None and not team.memberships.filter(user=user).exists():
        raise ApplicationError("A team token needs you to be in that team.")
    if scope not in ApiToken.Scope.values:
        raise ApplicationError("Unknown scope.")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        team=team,
        name=name.strip() or "token",
        prefix=secret[:10],
        scope=scope,
        key_sha256=hashlib.sha256(secret.encode()).hexdigest(),
    )
    return token, secret


def token_authenticate(secret: str) -> ApiToken | None:
    if not secret.startswith(TOKEN_PREFIX):
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_sha256=hashlib.sha256(secret.encode()).hexdigest(), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if token is not None:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token


def token_revoke(*, token: ApiToken, by) -> ApiToken:
    if token.user_id != by.pk:
        raise ApplicationError("Only the token's owner revokes it.")
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    return token
