"""Exports of a published adapter version: request one, build it in a task (``exporting.build`` does the work
from the adapter's signed zip and the base model's weights), store the signed zips with the version, open
them for download."""

from __future__ import annotations

import json
import logging
import tempfile
import time
import zipfile
from datetime import timedelta
from pathlib import Path

from django.core.files import File
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone

from attribution.manifest import sha256_file
from exporting.build import Signer, Source, build_exports
from modelfactory.exceptions import ApplicationError

from .. import policy, signing
from ..models import Adapter, AdapterExport
from ..publish import code_version

logger = logging.getLogger(__name__)
STALE_AFTER = timedelta(minutes=30)  # no progress report for this long: its worker died
ADAPTER_MEMBERS = ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "manifest.json", "manifest.sig")


def _fail_stale(export: AdapterExport) -> None:
    AdapterExport.objects.filter(
        pk=export.pk, status=AdapterExport.Status.RUNNING, progress_at__lt=timezone.now() - STALE_AFTER
    ).update(
        status=AdapterExport.Status.FAILED,
        finished_at=timezone.now(),
        error="The worker building these exports stopped reporting progress. Request them again.",
    )


def export_request(*, adapter: Adapter, by) -> AdapterExport:
    """Build the adapter version's exports on the default queue, unless they exist or are being built (that
    row is returned); a failed build is queued again. Whoever may download the adapter may ask."""
    if not policy.can_download_adapter(by, adapter):
        raise ApplicationError("Only those who may download this adapter may export it.")
    if not adapter.base_model.local_path or not Path(adapter.base_model.local_path, "config.json").exists():
        raise ApplicationError("The base model's weights are missing on this server: import it again first.")
    try:
        with transaction.atomic():
            export, created = AdapterExport.objects.get_or_create(adapter=adapter, defaults={"requested_by": by})
    except IntegrityError:  # requested twice at once: the one-to-one lets one through
        export, created = AdapterExport.objects.get(adapter=adapter), False
    _fail_stale(export)
    requeued = AdapterExport.objects.filter(pk=export.pk, status=AdapterExport.Status.FAILED).update(
        status=AdapterExport.Status.QUEUED,
        phase=AdapterExport.Phase.WAITING,
        requested_by=by,
        error="",
        steps_done=0,
        steps_total=0,
        finished_at=None,
    )
    export.refresh_from_db()
    if created or requeued:
        from .tasks import export_run_task

        export_run_task.delay_on_commit(export.pk)
    return export


def _progress(export_id: int):
    last = {"phase": None, "at": 0.0}

    def progress(phase, done=0, total=0):
        now = time.monotonic()
        if phase == last["phase"] and now - last["at"] < 1 and done < total:
            return  # a report a second is enough for a progress bar
        last.update(phase=phase, at=now)
        AdapterExport.objects.filter(pk=export_id).update(
            phase=phase, steps_done=done, steps_total=total, progress_at=timezone.now()
        )

    return progress


def _stage_adapter(adapter: Adapter, tmp: Path) -> Source:
    """The adapter's files and its manifest exactly as signed, from the zip it was published as."""
    with default_storage.open(adapter.zip_name, "rb") as handle, zipfile.ZipFile(handle) as archive:
        for member in ADAPTER_MEMBERS:
            archive.extract(member, tmp)
    return Source(
        base_dir=Path(adapter.base_model.local_path),
        adapter_dir=tmp / "adapter",
        adapter_manifest=json.loads((tmp / "manifest.json").read_bytes()),
        adapter_signature=(tmp / "manifest.sig").read_bytes(),
    )


def export_build(export: AdapterExport, progress) -> dict:
    """Build and store the three signed zips; returns format -> {name, bytes, sha256}. A failure stores nothing."""
    adapter = export.adapter
    stored: dict[str, dict] = {}
    signer = Signer(signing.private_key(), signing.public_key_pem(), code_version())
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            source = _stage_adapter(adapter, tmp)
            (tmp / "work").mkdir()
            zips = build_exports(source, signer, tmp / "work", progress)
            progress(AdapterExport.Phase.STORING, done=0, total=len(zips))
            for done, (fmt, path) in enumerate(zips.items(), 1):
                with open(path, "rb") as handle:
                    name = default_storage.save(
                        f"adapters/{adapter.slug}/v{adapter.version}/exports/{path.name}", File(handle)
                    )
                stored[fmt] = {
                    "name": name,
                    "filename": path.name,
                    "bytes": path.stat().st_size,
                    "sha256": sha256_file(path),
                }
                progress(AdapterExport.Phase.STORING, done=done, total=len(zips))
    except BaseException:
        for entry in stored.values():
            default_storage.delete(entry["name"])
        raise
    return stored


def export_run(*, export_id: int) -> str:
    """The task's work: claim the queued export, build it, record how it ended. Safe to run twice: an export
    that is not queued (being built elsewhere, ready, failed) is left as it is."""
    claimed = AdapterExport.objects.filter(pk=export_id, status=AdapterExport.Status.QUEUED).update(
        status=AdapterExport.Status.RUNNING, started_at=timezone.now(), progress_at=timezone.now()
    )
    export = AdapterExport.objects.select_related("adapter", "adapter__base_model").filter(pk=export_id).first()
    if export is None or not claimed:
        return export.status if export else "missing"
    outcome = {"status": AdapterExport.Status.FAILED}
    try:
        outcome["files"] = export_build(export, _progress(export_id))
    except (ValueError, ApplicationError) as error:
        outcome["error"] = f"The export failed: {getattr(error, 'message', error)}"
    except Exception as error:
        logger.exception("export %s failed", export_id)
        outcome["error"] = f"The export failed ({type(error).__name__}: {error}). Request it again."
    else:
        outcome["status"] = AdapterExport.Status.SUCCEEDED
    outcome["finished_at"] = timezone.now()
    AdapterExport.objects.filter(pk=export_id).update(**outcome)
    return outcome["status"]


def export_file_open(*, export: AdapterExport, fmt: str):
    """The stored zip of one format, opened for streaming, and its file name."""
    entry = export.files.get(fmt) if export.status == AdapterExport.Status.SUCCEEDED else None
    if entry is None:
        raise ApplicationError("This export is not ready.")
    return default_storage.open(entry["name"], "rb"), entry["filename"]
