"""Reads for the adapter catalogue, shared by the pages and the API."""

from django.db.models import Q

from accounts.contributors import contributor_pseudonym


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
