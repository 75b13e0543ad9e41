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
from modelfactory.exceptions import ApplicationError
from training import policy as training_policy

from . import exports, policy, selectors, services, signing
from .models import Adapter, AdapterExport, ApiToken


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


class ExportFileOut(Schema):
    format: str
    filename: str
    bytes: int
    sha256: str
    download_url: str


class ExportOut(Schema):
    status: str
    phase: str
    steps_done: int
    steps_total: int
    error: str
    files: list[ExportFileOut]


def _export_out(export: AdapterExport) -> dict:
    adapter = export.adapter
    base = f"/api/v1/adapters/{adapter.slug}/versions/{adapter.version}/exports"
    files = [
        {
            "format": fmt,
            **{k: entry[k] for k in ("filename", "bytes", "sha256")},
            "download_url": f"{base}/{fmt}/download",
        }
        for fmt, entry in export.files.items()
    ]
    fields = ("status", "phase", "steps_done", "steps_total", "error")
    return {**{k: getattr(export, k) for k in fields}, "files": files}


def _exportable(request, slug: str, version: int) -> Adapter:
    """The adapter, if this token's user may export it (the same 404 as a missing one otherwise)."""
    adapter = _adapter(request, slug, version)
    if not policy.can_export_adapter(request.user, adapter):
        raise HttpError(404, "No such adapter.")
    if request.api_token.scope not in (ApiToken.Scope.DOWNLOAD, ApiToken.Scope.TRAIN):
        raise HttpError(403, "This token may read but not export; create one with the download scope.")
    return adapter


@api.post(
    "/adapters/{slug}/versions/{version}/exports",
    response={202: ExportOut},
    summary="Have the version's exports built: merged weights, GGUF f16 and q8_0 (scope: download or train)",
)
def export_request(request, slug: str, version: int):
    adapter = _exportable(request, slug, version)
    try:
        export = exports.export_request(adapter=adapter, by=request.user)
    except ApplicationError as error:
        raise HttpError(400, error.message) from None
    return 202, _export_out(export)


@api.get("/adapters/{slug}/versions/{version}/exports", response=ExportOut, summary="The exports' status and files")
def export_status(request, slug: str, version: int):
    export = AdapterExport.objects.filter(adapter=_exportable(request, slug, version)).first()
    if export is None:
        raise HttpError(404, "No export of this version was requested; POST to this URL to build it.")
    return _export_out(export)


@api.get("/adapters/{slug}/versions/{version}/exports/{fmt}/download", summary="One export's signed zip")
def export_download(request, slug: str, version: int, fmt: str):
    export = AdapterExport.objects.filter(adapter=_exportable(request, slug, version)).first()
    if export is None or fmt not in export.files:
        raise HttpError(404, "No such export (or it is not built yet).")
    handle, filename = exports.export_file_open(export=export, fmt=fmt)
    return FileResponse(handle, as_attachment=True, filename=filename)


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
