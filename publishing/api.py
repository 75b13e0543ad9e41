"""REST API under /api/v1/ (django-ninja; OpenAPI at /api/v1/openapi.json). Same policies as the pages."""

from datetime import datetime

from django.http import FileResponse, HttpResponse
from ninja import NinjaAPI, Schema
from ninja.errors import HttpError
from ninja.pagination import PageNumberPagination, paginate
from ninja.security import HttpBearer
from ninja.throttling import BaseThrottle

from datanets import policy as datanet_policy
from modelfactory import ratelimit
from training import policy as training_policy

from . import policy, selectors, services, signing
from .models import Adapter, ApiToken


class TokenAuth(HttpBearer):
    """Authorization: Bearer mf_...: personal or team tokens, stored hashed, revocable."""

    def authenticate(self, request, token):
        api_token = services.token_authenticate(token)
        if api_token is None:
            return None
        request.user = api_token.user
        request.api_token = api_token
        return api_token


class SharedRateThrottle(BaseThrottle):
    """A token's requests count against its one quota (shared with /v1); anonymous ones per client address."""

    def allow_request(self, request) -> bool:
        key, rate = ratelimit.request_quota_key(request)
        verdict = ratelimit.rate_hit(key, rate)
        self.retry_after = verdict.retry_after
        return verdict.allowed

    def wait(self):
        return getattr(self, "retry_after", None)


api = NinjaAPI(
    title="ModelFactory API",
    version="1.0.0",
    urls_namespace="api",
    auth=TokenAuth(),
    throttle=[SharedRateThrottle()],
)


def _adapters_for(request):
    return policy.visible_adapters(request.user, token=getattr(request, "api_token", None))


def _adapter(request, slug: str, version: int | None = None) -> Adapter:
    return policy.get_adapter_for_user(request.user, slug, version, token=getattr(request, "api_token", None))


class AdapterOut(Schema):
    slug: str
    version: int
    name: str
    description: str
    domain: str
    visibility: str
    base_model: str
    datanets: list[str]
    manifest_sha256: str
    download_count: int
    created_at: datetime

    @staticmethod
    def resolve_base_model(obj):
        return obj.base_model.name

    @staticmethod
    def resolve_datanets(obj):
        return [d["slug"] + f"-v{d['version']}" for d in obj.manifest["datanets"]]


class AdapterDetailOut(AdapterOut):
    manifest: dict


class DatanetOut(Schema):
    slug: str
    name: str
    record_schema: str
    license: str
    visibility: str
    domain_tags: str

    @staticmethod
    def resolve_record_schema(obj):
        return obj.schema


class VersionOut(Schema):
    number: int
    merkle_root: str
    record_count: int
    token_count: int
    license: str
    created_at: datetime


class JobOut(Schema):
    id: int
    name: str
    status: str
    step: int
    total_steps: int
    error: str
    evaluation: dict
    created_at: datetime
    finished_at: datetime | None


@api.get("/adapters", response=list[AdapterOut], summary="List and search adapters you may see")
@paginate(PageNumberPagination, page_size=20)
def adapter_list(request, q: str = "", base_model: str = "", datanet: str = "", domain: str = ""):
    adapters = _adapters_for(request).order_by("slug", "-version")
    return selectors.adapter_search(adapters, q=q, base_model=base_model, datanet=datanet, domain=domain)


@api.get("/adapters/{slug}", response=AdapterDetailOut, summary="The latest version of an adapter, with its manifest")
def adapter_detail(request, slug: str):
    return _adapter(request, slug)


@api.get("/adapters/{slug}/versions/{version}", response=AdapterDetailOut)
def adapter_version(request, slug: str, version: int):
    return _adapter(request, slug, version)


@api.get("/adapters/{slug}/versions/{version}/download", summary="The signed zip (scope: download or train)")
def adapter_download(request, slug: str, version: int):
    adapter = _adapter(request, slug, version)
    if request.api_token.scope not in (ApiToken.Scope.DOWNLOAD, ApiToken.Scope.TRAIN):
        raise HttpError(403, "This token may read but not download; create one with the download scope.")
    handle = services.adapter_download_counted(adapter=adapter)
    return FileResponse(handle, as_attachment=True, filename=f"{adapter.slug}-v{adapter.version}.zip")


def _datanets_for(request):
    datanets = datanet_policy.visible_datanets(request.user)
    token = getattr(request, "api_token", None)
    if token is not None and token.team_id:  # a team token reaches what that team may, not all its user may
        datanets = datanet_policy.datanets_in_team_scope(datanets, token.team_id)
    return datanets


@api.get("/datanets", response=list[DatanetOut], summary="Datanets you may see")
@paginate(PageNumberPagination, page_size=50)
def datanet_list(request):
    return _datanets_for(request).order_by("name")


@api.get("/datanets/{slug}/versions", response=list[VersionOut])
@paginate(PageNumberPagination, page_size=50)
def datanet_versions(request, slug: str):
    datanet = datanet_policy.get_datanet_for_user(request.user, slug)
    if not _datanets_for(request).filter(pk=datanet.pk).exists():
        raise HttpError(404, "No such Datanet.")
    return datanet.versions.order_by("-number")


@api.get("/jobs/{job_id}", response=JobOut, summary="A fine-tune job's status")
def job_status(request, job_id: int):
    return training_policy.get_job_for_user(request.user, job_id)


@api.get("/signing-key", auth=None, summary="The instance's Ed25519 public key (PEM) that signs manifests")
def signing_key(request):
    return HttpResponse(signing.public_key_pem(), content_type="application/x-pem-file")
