"""Where a fine-tune job's files live: its local work directory, its training data, its stored outputs."""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage

from datanets import services as datanet_services
from training.models import FineTuneJob

STORED_OUTPUTS = ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "config.json", "metrics.json")


def work_dir(job: FineTuneJob) -> Path:
    """Local scratch (data, checkpoints) of one job; named with its creation time so that a reused
    primary key can never pick up another job's checkpoint."""
    return Path(settings.JOB_WORK_DIR) / f"{job.pk}-{job.created_at:%Y%m%dT%H%M%S%f}"


def write_versions(versions, path: Path) -> None:
    """The records of Datanet versions (a job's training or validation data), as the trainer's JSONL."""
    with open(path, "w", encoding="utf-8") as handle:
        for version in versions:
            for line in datanet_services.version_export_lines(version):
                handle.write(line)


def outputs_store(*, job: FineTuneJob, output_dir: Path) -> str:
    """Copy every file the trainer wrote into storage under ``jobs/<pk>``; returns that prefix."""
    prefix = f"jobs/{job.pk}"
    for file in sorted(p for p in output_dir.rglob("*") if p.is_file()):
        name = f"{prefix}/{file.relative_to(output_dir).as_posix()}"
        if default_storage.exists(name):
            default_storage.delete(name)
        with open(file, "rb") as handle:
            default_storage.save(name, File(handle))
    return prefix


def job_outputs(job: FineTuneJob) -> dict:
    """Names of the stored outputs (adapter files, config, metrics)."""
    if not job.adapter_path:
        return {}
    names = {}
    for name in STORED_OUTPUTS:
        full = f"{job.adapter_path}/{name}"
        if default_storage.exists(full):
            names[name] = full
    return names


def held_out_hashes(outputs: dict) -> set[str]:
    """Content hashes of the records the trainer held out to evaluate on (they did not train the adapter)."""
    if "metrics.json" not in outputs:
        return set()
    with default_storage.open(outputs["metrics.json"], "rb") as handle:
        return set(json.load(handle).get("held_out") or [])
