"""Store and recompute the influence of training records on a job's adapter (maths: attribution/influence.py)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from datanets.models import Record
from training import trainer
from training.jobs.outputs import job_outputs, write_versions
from training.models import FineTuneJob, RecordInfluence


def influence_by_method(job: FineTuneJob, method: str | None = None) -> tuple[str | None, dict | None]:
    """The stored per-contributor influence of ``method`` (default: the job's default method)."""
    stored = job.influence or {}
    method = method or stored.get("default_method")
    return method, stored.get("methods", {}).get(method)


def influence_store(*, job: FineTuneJob, output_dir: Path) -> dict:
    """Read the trainer's influence.json: per-record scores into RecordInfluence, the per-contributor
    tables onto the job (merged with methods computed before). Returns the job's influence."""
    data = json.loads((Path(output_dir) / "influence.json").read_text())
    methods = list(data["contributors"])
    record_ids = dict(
        ((content_hash, str(contributor)), pk)
        for pk, content_hash, contributor in Record.objects.filter(versions__in=job.datanet_versions.all())
        .values_list("pk", "content_hash", "contributor_id")
        .distinct()
    )
    scores: dict[tuple[int, str], float] = {}
    for row in data["records"]:
        pk = record_ids.get((row["content_hash"], str(row["contributor"])))
        for method in methods:
            if pk is not None:  # a record seen twice (two versions) keeps one score: they are the same
                scores[(pk, method)] = row[method]
    now = timezone.now().isoformat()
    influence = dict(job.influence or {})
    influence.setdefault("methods", {})
    for method in methods:
        influence["methods"][method] = {
            "parameters": data["parameters"],
            "contributors": data["contributors"][method],
            "seconds": data["seconds"],
            "gradient_bytes": data["gradient_bytes"],
            "computed_at": now,
        }
    influence.setdefault("default_method", data["default_method"])
    with transaction.atomic():
        RecordInfluence.objects.filter(job=job, method__in=methods).delete()
        RecordInfluence.objects.bulk_create(
            [RecordInfluence(job=job, record_id=pk, method=m, score=s) for (pk, m), s in sorted(scores.items())],
            batch_size=5000,
        )
        FineTuneJob.objects.filter(pk=job.pk).update(influence=influence)
    job.influence = influence
    return influence


def influence_recompute(
    *, job: FineTuneJob, methods: list[str], projection_dim: int = 0, aggregation: str | None = None, progress=None
) -> dict:
    """Compute influence again for a succeeded job's stored adapter, with other methods or parameters."""
    if job.status != FineTuneJob.Status.SUCCEEDED:
        raise ValueError("only a succeeded job's adapter can be attributed")
    outputs = job_outputs(job)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        adapter = tmp / "adapter"
        adapter.mkdir()
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            with default_storage.open(outputs[f"adapter/{name}"]) as source, open(adapter / name, "wb") as target:
                shutil.copyfileobj(source, target)
        data, validation = tmp / "data.jsonl", None
        write_versions(job.datanet_versions.all(), data)
        if job.validation_version_id:  # the run's own held-out set
            validation = tmp / "validation.jsonl"
            write_versions([job.validation_version], validation)
        config = trainer.TrainConfig.from_dict(
            {
                **job.config,
                "base_model_path": job.base_model.local_path,
                "influence_methods": methods,
                "influence_projection_dim": projection_dim,
                "influence_aggregation": aggregation or job.config.get("influence_aggregation", "sum"),
            }
        )
        trainer.attribute_saved(config, data, adapter, tmp / "output", progress=progress, eval_path=validation)
        return influence_store(job=job, output_dir=tmp / "output")
