"""The publish pipeline, run by a task: a succeeded job's adapter files, records.jsonl streamed from the
database, the model card and the signed manifest go into one zip in storage; the Adapter row is written last,
in one transaction, so nothing is visible until everything is."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.text import slugify

from accounts.contributors import contributor_handles, contributor_pseudonym
from attribution import manifest as manifest_lib
from attribution.aggregation import AGGREGATIONS
from datanets.ledger import ledger_append
from datanets.models import Record
from modelfactory.exceptions import ApplicationError
from training import jobs as training_jobs
from training.jobs.influence import influence_by_method
from training.jobs.outputs import held_out_hashes

from . import signing
from .models import Adapter, AdapterRecord, Publication

CHUNK_ROWS = 5000  # rows per database fetch, and between two progress reports
Progress = Callable[..., None]  # progress(phase, rows_done=..., rows_total=...)
ADAPTER_FILES = ("adapter/adapter_config.json", "adapter/adapter_model.safetensors")

METHOD_REFERENCES = {
    "datainf": "DataInf: Kwon, Wu, Wu and Zou, 'DataInf: Efficiently Estimating Data Influence in LoRA-tuned LLMs "
    "and Diffusion Models', 2023",
    "tracin": "TracIn: Pruthi, Liu, Kale and Sundararajan, 'Estimating Training Data Influence by Tracing Gradient "
    "Descent', 2020 (final checkpoint)",
    "tracincp": "TracInCP: Pruthi, Liu, Kale and Sundararajan, 'Estimating Training Data Influence by Tracing "
    "Gradient Descent', 2020 (every step's AdamW update of each record, held-out gradients at the start, the end "
    "and evenly between)",
}


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
        "aggregation": AGGREGATIONS[data["parameters"].get("aggregation", "sum")],
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


# Records, streamed ------------------------------------------------------------------------------


def job_versions(job) -> list:
    """The job's Datanet versions in records.jsonl order, sorted here: a database collation may order slugs
    with punctuation differently from Python, and the file's order is Python's."""
    return sorted(job.datanet_versions.select_related("datanet"), key=lambda v: (v.datanet.slug, v.number))


def record_rows(versions: list, held_out: set[str]) -> Iterator[dict]:
    """records.jsonl rows in the file's order (datanet, version, content hash), a database chunk at a time;
    each with its role: "training", or "evaluation" for a held-out record."""
    for version in versions:
        records = version.records.order_by("content_hash").values_list("content_hash", "contributor_id", "token_count")
        for content_hash, contributor_id, tokens in records.iterator(chunk_size=CHUNK_ROWS):
            yield {
                "content_hash": content_hash,
                "contributor": contributor_pseudonym(contributor_id),
                "datanet": version.datanet.slug,
                "version": version.number,
                "tokens": tokens,
                "role": "evaluation" if content_hash in held_out else "training",
            }


def contributor_rows(versions: list, held_out: set[str]) -> Iterator[dict]:
    """The same rows grouped by contributor, each group in content-hash order: what the per-contributor Merkle
    roots are folded from without holding a contributor's hashes (a record in two versions comes twice)."""
    records = (
        Record.objects.filter(versions__in=versions)
        .order_by("contributor_id", "content_hash")
        .values_list("content_hash", "contributor_id", "token_count")
    )
    for content_hash, contributor_id, tokens in records.iterator(chunk_size=CHUNK_ROWS):
        role = "evaluation" if content_hash in held_out else "training"
        yield {
            "content_hash": content_hash,
            "contributor": contributor_pseudonym(contributor_id),
            "tokens": tokens,
            "role": role,
        }


def _counted(rows: Iterator[dict], progress: Progress, total: int) -> Iterator[dict]:
    done = 0
    for done, row in enumerate(rows, 1):
        if done % CHUNK_ROWS == 0:
            progress(Publication.Phase.RECORDS, rows_done=done, rows_total=total)
        yield row
    progress(Publication.Phase.RECORDS, rows_done=done, rows_total=total)


def records_write(versions: list, held_out: set[str], path: Path, progress: Progress) -> dict:
    """Stream records.jsonl to ``path``; returns the held-out summary (held-out rows are few: the trainer's
    metrics list them already)."""
    held: list[dict] = []

    def noting_held_out(rows):
        for row in rows:
            if row["role"] == "evaluation":
                held.append(row)
            yield row

    total = sum(version.record_count for version in versions)
    progress(Publication.Phase.RECORDS, rows_done=0, rows_total=total)
    with open(path, "wb") as handle:
        manifest_lib.records_jsonl_write(
            noting_held_out(_counted(record_rows(versions, held_out), progress, total)), handle
        )
    return manifest_lib.held_out_summary(held)


# Files, card, manifest, zip ---------------------------------------------------------------------


def stage_adapter_files(outputs: dict, tmp: Path, base_model) -> dict[str, Path]:
    """Copy the adapter files out of storage; its config names the base model as the catalogue does,
    not by the path it has on the workers (the weights hash is in the manifest)."""
    files: dict[str, Path] = {}
    for inside in ADAPTER_FILES:
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


def datanet_entries(versions: list) -> list[dict]:
    return [
        {
            "slug": v.datanet.slug,
            "name": v.datanet.name,
            "version": v.number,
            "merkle_root": v.merkle_root,
            "license": v.license,
            "records": v.record_count,
            "tokens": v.token_count,
        }
        for v in versions
    ]


def base_model_entry(base) -> dict:
    return {
        "name": base.name,
        "architecture": base.architecture,
        "parameters": base.parameter_count,
        "weights_sha256": base.weights_sha256,
        "license": base.license,
    }


def model_card(publication: Publication, *, slug: str, version: int, summary: dict) -> str:
    job = publication.job
    licences = sorted({d["license"] for d in summary["datanets"]})
    return render_to_string(
        "publishing/model_card.md",
        {
            "name": publication.name,
            "slug": slug,
            "version": version,
            "description": publication.description,
            "domain": publication.domain,
            "base_model": base_model_entry(job.base_model),
            "method": (job.evaluation or {}).get("method") or job.method,
            "config": job.config,
            "datanets": summary["datanets"],
            "evaluation": job.evaluation,
            "licences": licences,
            "license": licences[0] if len(licences) == 1 else "other",
            "contributors": summary["contributors"],
            "totals": summary["totals"],
            "held_out": summary["held_out"],
            "influence": summary["influence"],
            "influence_by_id": {c["id"]: c for c in (summary["influence"] or {}).get("contributors", [])},
        },
    )


def signed_manifest(publication: Publication, *, slug: str, version: int, files: dict, summary: dict) -> dict:
    job = publication.job
    return manifest_lib.build_manifest(
        adapter={"slug": slug, "name": publication.name, "version": version, "description": publication.description},
        files=files,
        base_model=base_model_entry(job.base_model),
        datanets=summary["datanets"],
        contributors=summary["contributors"],
        totals=summary["totals"],
        held_out=summary["held_out"],
        handles=summary["handles"],
        training={
            "job_id": job.pk,
            "method": (job.evaluation or {}).get("method") or job.method,
            "preset": job.preset,
            "config": job.config,
            "code_version": code_version(),
        },
        evaluation=manifest_evaluation(job.evaluation),
        influence=summary["influence"],
        timestamps={
            "trained_at": job.finished_at.isoformat() if job.finished_at else None,
            "published_at": timezone.now().isoformat(),
        },
        public_key_pem=signing.public_key_pem(),
    )


def zip_and_store(*, slug: str, version: int, files: dict, manifest: dict, tmp: Path) -> tuple[str, int]:
    """The signed zip, saved to storage; returns its storage name and size."""
    zip_path = tmp / f"{slug}-v{version}.zip"
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for inside, local in sorted(files.items()):
            archive.write(local, inside)
        archive.writestr("manifest.json", manifest_lib.canonical(manifest))
        archive.writestr("manifest.sig", manifest_lib.sign(manifest, signing.private_key()))
        archive.writestr("signing_key.pem", signing.public_key_pem())
    with open(zip_path, "rb") as handle:
        name = default_storage.save(f"adapters/{slug}/v{version}/{zip_path.name}", File(handle))
    return name, zip_path.stat().st_size


# The pipeline -----------------------------------------------------------------------------------


def next_version(slug: str) -> int:
    latest = Adapter.objects.filter(slug=slug).order_by("-version").values_list("version", flat=True).first()
    return (latest or 0) + 1


def adapter_build(publication: Publication, progress: Progress) -> Adapter:
    """Build the signed zip into storage, then record the adapter; a failure leaves no zip and no row."""
    job = publication.job
    outputs = training_jobs.job_outputs(job)
    if not all(name in outputs for name in ADAPTER_FILES):
        raise ApplicationError("This job's adapter files are missing from storage.")
    slug, version = slugify(publication.name), next_version(slugify(publication.name))
    versions = job_versions(job)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        progress(Publication.Phase.FILES)
        files = stage_adapter_files(outputs, tmp, job.base_model)
        files["records.jsonl"] = tmp / "records.jsonl"
        held_out = held_out_hashes(outputs)
        summary = {"held_out": records_write(versions, held_out, files["records.jsonl"], progress)}
        progress(Publication.Phase.MANIFEST)
        summary.update(_contributors(publication, versions, held_out), datanets=datanet_entries(versions))
        (tmp / "README.md").write_text(
            model_card(publication, slug=slug, version=version, summary=summary), encoding="utf-8"
        )
        files["README.md"] = tmp / "README.md"
        manifest = signed_manifest(publication, slug=slug, version=version, files=files, summary=summary)
        progress(Publication.Phase.ZIP)
        zip_name, zip_bytes = zip_and_store(slug=slug, version=version, files=files, manifest=manifest, tmp=tmp)
    progress(Publication.Phase.SAVING)
    try:
        return adapter_save(
            publication,
            slug=slug,
            version=version,
            manifest=manifest,
            zip_name=zip_name,
            zip_bytes=zip_bytes,
            versions=versions,
        )
    except BaseException:
        default_storage.delete(zip_name)  # the row was never written: leave no orphan zip behind
        raise


def _contributors(publication: Publication, versions: list, held_out: set[str]) -> dict:
    influence = manifest_influence(
        publication.job, method=publication.influence_method or None, recomputed_from=publication.recomputed_from
    )
    if publication.influence_method and influence is None:
        raise ApplicationError(f"No {publication.influence_method} influence has been computed for this job.")
    handles = contributor_handles()
    contributors, totals = manifest_lib.contributor_summary_streamed(contributor_rows(versions, held_out))
    contributors = [{**c, "handle": handles.get(c["id"])} for c in contributors]
    return {"contributors": contributors, "totals": totals, "handles": handles, "influence": influence}


def adapter_save(publication: Publication, *, slug, version, manifest, zip_name, zip_bytes, versions) -> Adapter:
    """The Adapter row, its records, the ledger entry and the span-index task, all or nothing."""
    job = publication.job
    with transaction.atomic():
        adapter = Adapter.objects.create(
            slug=slug,
            version=version,
            name=publication.name.strip(),
            description=publication.description,
            domain=publication.domain.strip(),
            visibility=publication.visibility,
            team=publication.team,
            job=job,
            base_model=job.base_model,
            manifest=manifest,
            zip_name=zip_name,
            zip_bytes=zip_bytes,
            manifest_sha256=hashlib.sha256(manifest_lib.canonical(manifest)).hexdigest(),
            published_by=publication.requested_by,
        )
        adapter.datanet_versions.set(versions)
        record_ids = Record.objects.filter(versions__in=versions).order_by("id").values_list("id", flat=True).distinct()
        batch = []
        for record_id in record_ids.iterator(chunk_size=CHUNK_ROWS):
            batch.append(AdapterRecord(adapter=adapter, record_id=record_id))
            if len(batch) == CHUNK_ROWS:
                AdapterRecord.objects.bulk_create(batch)
                batch = []
        AdapterRecord.objects.bulk_create(batch)
        ledger_append(
            event="adapter.published",
            payload={"adapter": slug, "version": version, "manifest_sha256": adapter.manifest_sha256, "job_id": job.pk},
            actor=publication.requested_by,
        )
        from serving.tasks import span_index_build_task  # the span index for answer attribution

        span_index_build_task.delay_on_commit(adapter.pk)
    return adapter
