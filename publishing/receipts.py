"""Contributor receipts: what one contributor's data did in one adapter, signed, checkable without the zip."""

from __future__ import annotations

from django.utils import timezone

from accounts.contributors import contributor_pseudonym
from attribution import receipt as receipt_lib
from modelfactory.exceptions import ApplicationError
from training.jobs.outputs import held_out_hashes, job_outputs

from . import signing
from .models import Adapter, AdapterRecord


def receipt_adapters(user):
    """The adapters any of this contributor's records went into, newest first (a queryset to paginate)."""
    used = AdapterRecord.objects.filter(record__contributor=user).values("adapter_id")
    return Adapter.objects.filter(pk__in=used).order_by("-created_at", "-pk")


def _record_uses(adapter: Adapter, rows: list[dict]) -> dict[int, str]:
    """Training or evaluation only, per record, as the signed manifest has it: the trainer lists the
    content hashes it held out (metrics.json), and every other record of the versions trained it."""
    held_out = held_out_hashes(job_outputs(adapter.job))
    return {row["record_id"]: "evaluation" if row["content_hash"] in held_out else "training" for row in rows}


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
    uses = _record_uses(adapter, rows)
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
