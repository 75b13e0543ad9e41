"""Reads for the adapter catalogue, shared by the pages and the API."""

from django.db.models import Q


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
