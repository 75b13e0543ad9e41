"""Reads for the adapter catalogue (shared by the pages and the API) and for contributors' view of it."""

from collections import Counter

from django.db.models import Q

from accounts.contributors import contributor_pseudonym
from training.jobs.outputs import held_out_hashes, job_outputs

from . import policy
from .models import Adapter, AdapterRecord


def adapter_search(adapters, *, q: str = "", base_model: str = "", datanet: str = "", domain: str = ""):
    if q:
        adapters = adapters.filter(Q(name__icontains=q) | Q(description__icontains=q))
    if base_model:
        adapters = adapters.filter(base_model__name__iexact=base_model)
    if datanet:
        adapters = adapters.filter(datanet_versions__datanet__slug=datanet).distinct()
    if domain:
        adapters = adapters.filter(domain__iexact=domain)
    return adapters


def adapter_contributor_names(adapter, datanet_ids: list[int]) -> dict[str, str]:
    """Pseudonym -> username of the adapter's contributors to these Datanets (for those allowed to know)."""
    if not datanet_ids:
        return {}
    users = (
        adapter.used_records.filter(record__datanet_id__in=datanet_ids)
        .values_list("record__contributor_id", "record__contributor__username")
        .distinct()
    )
    return {contributor_pseudonym(pk): username for pk, username in users.iterator()}


def adapter_contributor_rows(adapter: Adapter) -> list[dict]:
    """The manifest's contributors with their influence beside their token share, and, where influence was
    measured, how many of their records trained the adapter (scored) and how many were held out."""
    measured = adapter.manifest.get("influence")
    influence = {c["id"]: c for c in (measured or {}).get("contributors", [])}
    held = held_out_hashes(job_outputs(adapter.job))
    held_by = Counter(
        contributor_pseudonym(pk)
        for pk in AdapterRecord.objects.filter(adapter=adapter, record__content_hash__in=held).values_list(
            "record__contributor_id", flat=True
        )
    )
    rows = []
    for c in adapter.manifest["contributors"]:  # the manifest counts the records that trained the adapter
        split = {"training": c["records"], "held_out": held_by[c["id"]]} if measured else {}
        rows.append({**c, "records": c["records"] + held_by[c["id"]], "influence": influence.get(c["id"]), **split})
    return rows


def contributions_in_adapters(user, adapters) -> list[dict]:
    """For a contributor: each of ``adapters`` (a page of them) with how many of their records went in and
    their share, and whether they may open the adapter's own page."""
    pseudonym = contributor_pseudonym(user.pk)
    out = []
    for adapter in adapters:
        mine = next((c for c in adapter.manifest["contributors"] if c["id"] == pseudonym), None)
        influence = (adapter.manifest.get("influence") or {}).get("contributors", [])
        measured = next((c for c in influence if c["id"] == pseudonym), None)
        if mine:
            out.append(
                {
                    "adapter": adapter,
                    "records": mine["records"],
                    "share": mine["share_by_tokens"],
                    "id": pseudonym,
                    "influence": measured,
                    "can_view": policy.can_view_adapter(user, adapter),
                    "method": (adapter.manifest.get("influence") or {}).get("method"),
                }
            )
    return out
