"""Use cases of the files and fine-tuning jobs API: a file becomes a contribution to a Datanet, a job a
FineTuneJob on one of its versions. Every refusal is an ApplicationError whose ``extra`` names the
request's ``param`` (and an OpenAI ``code``), raised before anything is stored."""

from __future__ import annotations

import json
import re
from pathlib import Path

from django.db import transaction
from django.db.models import Q
from django.http import Http404
from django.utils import timezone
from django.utils.text import slugify

from datanets import services as datanet_services
from datanets.ledger import ledger_append
from datanets.models import Datanet, DatanetVersion, Record, Upload
from modelfactory.exceptions import ApplicationError
from publishing.models import ApiToken
from training import jobs as training_jobs
from training import presets
from training.models import BaseModel, FineTuneJob

from . import policy
from .models import ApiFile, ApiJob

PURPOSE = "fine-tune"
MAX_REPORTED_LINES = 20
SUFFIX = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# OpenAI's ranges; "auto" (or leaving one out) takes the preset's value.
HYPERPARAMETERS = {"n_epochs": (int, 1, 50), "batch_size": (int, 1, 256), "learning_rate_multiplier": (float, 0, 10)}
DPO_HYPERPARAMETERS = {**HYPERPARAMETERS, "beta": (float, 0, 2)}


def problem(message: str, param: str | None = None, code: str | None = None, **extra) -> ApplicationError:
    return ApplicationError(message, {"param": param, "code": code, **extra})


# Files ----------------------------------------------------------------------------------------


def _schema_of(file) -> str:
    """preference for lines with chosen/rejected answers (ours or OpenAI's DPO format), chat for OpenAI's
    {"messages": [...]} lines, instruction otherwise (the ingest reports bad lines)."""
    file.seek(0)
    for raw in file:
        if raw.strip():
            try:
                first = json.loads(raw)
            except ValueError:
                break
            if not isinstance(first, dict):
                break
            if {"chosen", "preferred_output"} & set(first):
                return Datanet.Schema.PREFERENCE
            return Datanet.Schema.CHAT if "messages" in first else Datanet.Schema.INSTRUCTION
    return Datanet.Schema.INSTRUCTION


def _private_datanet_create(*, team, by, file) -> Datanet:
    """A private Datanet of the team for one file, its uploader a curator (the team moderates its own data)."""
    stem = Path(file.name).stem[:80] or "upload"
    base = slugify(f"{team.slug}-{stem}")[:100] or "api-upload"
    slug, n = base, 1
    while Datanet.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    datanet = Datanet.objects.create(
        name=f"{stem} (API upload)",
        slug=slug,
        team=team,
        created_by=by,
        schema=_schema_of(file),
        license="LicenseRef-Proprietary",
        visibility=Datanet.Visibility.PRIVATE,
        description=f"Uploaded by {by.username} through the files API.",
    )
    datanet.curators.add(by)
    return datanet


def _approve_on_upload(*, upload: Upload, by) -> int:
    """Approve the upload's records, each in the ledger as moderation would record it."""
    if not policy.can_approve_on_upload(by, upload.datanet):
        raise problem("Only a private Datanet's curators approve records on upload.")
    pending = Record.objects.filter(upload=upload, status=Record.Status.PENDING)
    rows = list(pending.values_list("pk", "content_hash", "contributor_id"))
    for pk, content_hash, contributor_id in rows:
        ledger_append(
            event="record.approved",
            actor=by,
            payload={
                "datanet": upload.datanet.slug,
                "record_id": pk,
                "content_hash": content_hash,
                "contributor_id": contributor_id,
                "on_upload": True,
            },
        )
    pending.update(status=Record.Status.APPROVED, reviewed_by=by, reviewed_at=timezone.now())
    return len(rows)


def _rejection(upload: Upload) -> ApplicationError:
    lines = "; ".join(
        f"line {e['line']}: {e['reason']}" if e["line"] else e["reason"] for e in upload.errors[:MAX_REPORTED_LINES]
    )
    more = upload.error_count - min(len(upload.errors), MAX_REPORTED_LINES)
    message = f"{upload.filename} was not stored: {upload.error_count} bad line(s). {lines}"
    return problem(
        message + (f"; and {more} more." if more > 0 else "."),
        "file",
        "invalid_file",
        lines=upload.errors[:MAX_REPORTED_LINES],
    )


def file_create(*, token: ApiToken, file, purpose: str, metadata: dict) -> ApiFile:
    """Ingest the file in this request (validated record by record; a bad line stores nothing): by
    default into a new private Datanet of the team, approved and published as a version at once; or
    into the Datanet named in ``metadata["datanet"]``, where its records wait for its curators."""
    if purpose != PURPOSE:
        raise problem(f"purpose must be 'fine-tune', not {purpose!r}: only fine-tuning files are taken.", "purpose")
    if not file.name.lower().endswith(".jsonl"):
        raise problem(f"{file.name} is not a .jsonl file: fine-tuning files hold one JSON object a line.", "file")
    try:
        team = policy.team_for_upload(token, metadata.get("team"))
    except ValueError as error:
        raise problem(str(error), "metadata") from error
    except Http404 as error:
        raise problem(f"{error} (or you are not in it).", "metadata") from error
    with transaction.atomic():
        if metadata.get("datanet"):
            try:
                datanet = policy.get_datanet_for_upload(token, metadata["datanet"])
            except Http404 as error:
                raise problem(f"No Datanet {metadata['datanet']!r} that you may contribute to.", "metadata") from error
        else:
            datanet = _private_datanet_create(team=team, by=token.user, file=file)
        file.seek(0)
        upload = datanet_services.upload_create(datanet=datanet, contributor=token.user, file=file)
        upload = datanet_services.upload_ingest(upload=upload)
        if upload.status != Upload.Status.DONE:
            raise _rejection(upload)
        version = None
        if not metadata.get("datanet"):
            _approve_on_upload(upload=upload, by=token.user)
            version = datanet_services.version_publish(
                datanet=datanet, by=token.user, notes=f"{upload.filename}, uploaded through the files API"
            )
        return ApiFile.objects.create(
            team=team,
            created_by=token.user,
            datanet=datanet,
            upload=upload,
            version=version,
            filename=upload.filename,
            bytes=upload.size_bytes,
        )


def file_delete(*, token: ApiToken, file: ApiFile) -> None:
    """The file leaves the API; its records still pending review are withdrawn. Published versions are
    immutable: jobs and adapters trained on them keep them."""
    if not policy.can_delete_file(token, file):
        raise problem("Only the file's uploader or its team's owners and admins delete it.", code="permission")
    with transaction.atomic():
        Record.objects.filter(upload=file.upload, status=Record.Status.PENDING).update(status=Record.Status.WITHDRAWN)
        file.delete()


def file_version(file: ApiFile) -> DatanetVersion | None:
    """The version a job on this file trains on: the one published on upload, else the Datanet's newest
    version that holds any of the file's records (once its curators approved and published them)."""
    if file.version_id:
        return file.version
    return file.datanet.versions.filter(records__upload=file.upload).order_by("-number").first()


# Jobs -----------------------------------------------------------------------------------------


def _hyperparameters(asked: dict, allowed: dict) -> dict:
    """Checked values, "auto" and absent ones dropped."""
    if not isinstance(asked, dict):
        raise problem("hyperparameters must be an object.", "hyperparameters")
    unknown = set(asked) - set(allowed)
    if unknown:
        raise problem(f"Unknown hyperparameter(s): {', '.join(sorted(unknown))}.", "hyperparameters")
    out = {}
    for name, (kind, low, high) in allowed.items():
        value = asked.get(name)
        if value in (None, "auto"):
            continue
        whole = kind is int and isinstance(value, int)
        if isinstance(value, bool) or not (whole or (kind is float and isinstance(value, int | float))):
            raise problem(f"{name} must be {'an integer' if kind is int else 'a number'} or 'auto'.", name)
        if not (low <= value <= high) or (kind is float and value == low):
            bound = f"from {low} to {high}" if kind is int else f"above {low} and at most {high}"
            raise problem(f"{name} is {value}: it must be {bound}, or 'auto'.", name)
        out[name] = value
    return out


def _method(method: dict | None, legacy: dict | None) -> tuple[str, dict]:
    """The objective ("sft" or "dpo") and its checked hyperparameters; OpenAI's top-level
    ``hyperparameters`` too (supervised)."""
    method = method or {"type": "supervised"}
    kind = method.get("type") if isinstance(method, dict) else None
    if kind not in ("supervised", "dpo"):
        raise problem(f"method.type must be 'supervised' or 'dpo', not {kind!r}.", "method.type")
    nested = (method.get(kind) or {}).get("hyperparameters")
    if kind == "dpo":
        return "dpo", _hyperparameters(nested or {}, DPO_HYPERPARAMETERS)
    return "sft", _hyperparameters(nested if nested is not None else legacy or {}, HYPERPARAMETERS)


def _file_and_version(token: ApiToken, file_id, param: str) -> tuple[ApiFile, DatanetVersion]:
    """A file the token reaches, and the published version that holds its records."""
    try:
        file = policy.get_file_for_token(token, str(file_id))
    except Http404 as error:
        raise problem(
            f"{param} {file_id!r} does not exist or you do not have access to it.", param, "file_not_found"
        ) from error
    version = file_version(file)
    if version is None:
        raise problem(
            f"{file.public_id}'s records await moderation in {file.datanet.name}: a curator approves and "
            "publishes them before they train.",
            param,
            "file_not_ready",
        )
    return file, version


def _base_model(name: str) -> BaseModel:
    found = BaseModel.objects.filter(Q(name=name) | Q(slug=name), enabled=True, status=BaseModel.Status.READY).first()
    if found is None:
        raise problem(f"The model {name!r} is not a base model ready for fine-tuning here.", "model", "model_not_found")
    return found


def _overrides(preset: str, objective: str, asked: dict, seed) -> dict:
    overrides = {} if objective == "sft" else {"objective": objective}
    if "n_epochs" in asked:
        overrides["epochs"] = float(asked["n_epochs"])
    if "batch_size" in asked:
        overrides["batch_size"] = asked["batch_size"]
    if "beta" in asked:
        overrides["beta"] = float(asked["beta"])
    if "learning_rate_multiplier" in asked:
        overrides["learning_rate"] = presets.learning_rate(preset, objective) * asked["learning_rate_multiplier"]
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2**31 - 1:
            raise problem("seed must be an integer from 0 to 2147483647.", "seed")
        overrides["seed"] = seed
    return overrides


def _clean_metadata(metadata) -> dict:
    if metadata is None:
        return {}
    if (
        not isinstance(metadata, dict)
        or len(metadata) > 16
        or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512 for k, v in metadata.items()
        )
    ):
        raise problem("metadata is at most 16 string keys (64 characters) with string values (512).", "metadata")
    return metadata


def job_create(
    *,
    token: ApiToken,
    model: str,
    training_file: str,
    validation_file=None,
    suffix=None,
    seed=None,
    metadata=None,
    method=None,
    hyperparameters=None,
) -> FineTuneJob:
    """A FineTuneJob on the training file's version, queued for a GPU worker like one from the wizard."""
    objective, asked = _method(method, hyperparameters)
    metadata = _clean_metadata(metadata)
    preset = metadata.get("preset", presets.DEFAULT)
    if preset not in presets.PRESETS:
        raise problem(f"metadata.preset must be one of {', '.join(presets.PRESETS)}.", "metadata")
    if suffix is not None and not (isinstance(suffix, str) and SUFFIX.match(suffix)):
        raise problem("suffix is 1 to 64 letters, digits, '-' or '_'.", "suffix")
    base_model = _base_model(model)
    file, version = _file_and_version(token, training_file, "training_file")
    validation = _file_and_version(token, validation_file, "validation_file") if validation_file else None
    preference = version.datanet.schema == Datanet.Schema.PREFERENCE
    if validation and (validation[1].datanet.schema == Datanet.Schema.PREFERENCE) != preference:
        raise problem(
            f"{validation[0].public_id} holds {validation[1].datanet.schema} records and {file.public_id} "
            f"{version.datanet.schema} records: validate on records of the training file's kind.",
            "validation_file",
        )
    if (objective == "dpo") != preference:
        held = "preference pairs" if preference else f"{version.datanet.schema} records"
        use = "'dpo'" if preference else "'supervised' (DPO needs a file in OpenAI's preference format)"
        raise problem(f"{file.public_id} holds {held}: use method.type {use}.", "method.type", "invalid_method")
    with transaction.atomic():
        job = training_jobs.job_create(
            owner=token.user,
            name=suffix or "",
            base_model=base_model,
            versions=[version],
            method="auto",
            preset=preset,
            overrides=_overrides(preset, objective, asked, seed),
            validation_version=validation[1] if validation else None,
        )
        ApiJob.objects.create(
            job=job,
            team=file.team,
            training_file=file.public_id,
            validation_file=validation[0].public_id if validation else "",
            suffix=suffix or "",
            metadata=metadata,
            hyperparameters=asked,
        )
    return job


def job_cancel(*, token: ApiToken, job: FineTuneJob) -> FineTuneJob:
    if job.finished:
        raise problem(f"ftjob-{job.pk} has already {job.status}: only a queued or running job is cancelled.")
    return training_jobs.job_cancel(job=job, by=token.user)
