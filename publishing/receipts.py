"""Contributor receipts: what one contributor's data did in one adapter, signed, checkable without the zip."""

from __future__ import annotations

from django.utils import timezone

from attribution import receipt as receipt_lib
from modelfactory.exceptions import ApplicationError
from training.models import RecordInfluence

from . import signing
from .models import Adapter, AdapterRecord
from .services import contributor_pseudonym


def receipt_adapters(user):
    """The adapters any of this contributor's records went into, newest first (a queryset to paginate)."""
    used = AdapterRecord.objects.filter(record__contributor=user).values("adapter_id")
    return Adapter.objects.filter(pk__in=used).order_by("-created_at", "-pk")


def _record_uses(adapter: Adapter, record_ids: list[int]) -> dict[int, str]:
    """Training or evaluation only, per record: the trainer scores the influence of every training record
    and of no held-out one, so without a score a record was held out (or skipped as unusable)."""
    job = adapter.job
    if not (job.influence or {}).get("methods"):
        return dict.fromkeys(record_ids, "unknown")
    trained = set(RecordInfluence.objects.filter(job=job, record_id__in=record_ids).values_list("record_id", flat=True))
    return {pk: "training" if pk in trained else "evaluation" for pk in record_ids}


def contributor_receipt(*, adapter: Adapter, contributor) -> dict:
    """The signed receipt of ``contributor``'s records in ``adapter`` (attribution.receipt)."""
    rows, version_hashes = [], {}
    for version in adapter.datanet_versions.select_related("datanet").order_by("datanet__slug", "number"):
        key = (version.datanet.slug, version.number)
        version_hashes[key] = list(version.records.values_list("content_hash", flat=True).iterator(chunk_size=5000))
        mine = version.records.filter(contributor=contributor).values_list("id", "content_hash", "token_count")
        rows += [
            {"record_id": pk, "content_hash": content_hash, "datanet": key[0], "version": key[1], "tokens": tokens}
            for pk, content_hash, tokens in mine
        ]
    if not rows:
        raise ApplicationError("None of your records went into this adapter.")
    uses = _record_uses(adapter, [row["record_id"] for row in rows])
    for row in rows:
        row["use"] = uses[row["record_id"]]
    try:
        receipt = receipt_lib.build_receipt(
            adapter={"slug": adapter.slug, "name": adapter.name, "version": adapter.version},
            manifest=adapter.manifest,
            manifest_sha256=adapter.manifest_sha256,
            contributor_id=contributor_pseudonym(contributor.pk),
            records=rows,
            version_hashes=version_hashes,
            issued_at=timezone.now().isoformat(),
        )
    except receipt_lib.ReceiptError as error:
        raise ApplicationError(error.message) from None
    return receipt_lib.sign_receipt(receipt, signing.private_key(), signing.public_key_pem())
