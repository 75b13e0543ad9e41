"""OpenAI-compatible files and fine-tuning jobs at /v1/ (django-ninja; OpenAPI at /v1/openapi.json).

The official ``openai`` client runs unchanged against it with ``base_url=".../v1"`` and an API token
(``Bearer mf_...``): reads take any scope, uploads, jobs and cancels the train scope. Errors come in
OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

import json
import re

from django.db.models import Count, Q
from django.http import FileResponse, Http404
from ninja import File, Form, NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError, Throttled, ValidationError
from ninja.files import UploadedFile

from datanets.models import Record
from modelfactory.exceptions import ApplicationError
from publishing.api import SharedRateThrottle, TokenAuth

from . import policy, services, shapes

api = NinjaAPI(
    title="ModelFactory OpenAI-compatible API",
    version="1.0.0",
    description="Files and fine-tuning jobs in OpenAI's shapes; chat at /v1/chat/completions.",
    urls_namespace="v1",
    auth=TokenAuth(),
    throttle=[SharedRateThrottle()],
)
KINDS = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_error",
}


def error(request, status: int, message: str, code: str | None = None, param: str | None = None):
    body = {"error": {"message": message, "type": KINDS.get(status, "server_error"), "param": param, "code": code}}
    return api.create_response(request, body, status=status)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request, exc):
    return error(request, 401, "Send a valid API token: Authorization: Bearer mf_...", "invalid_api_key")


@api.exception_handler(Throttled)
def _throttled(request, exc):
    response = error(request, 429, f"Rate limit reached; retry in {exc.wait} s.", "rate_limit_exceeded")
    response["Retry-After"] = str(exc.wait or 1)
    return response


@api.exception_handler(HttpError)
def _http_error(request, exc):
    return error(request, exc.status_code, exc.message)


@api.exception_handler(Http404)
def _not_found(request, exc):
    return error(request, 404, str(exc) or "Not found.", "not_found")


@api.exception_handler(ValidationError)
def _invalid(request, exc):
    first = exc.errors[0] if exc.errors else {}
    param = ".".join(str(part) for part in first.get("loc", ())[2:]) or None  # drop ("body", "payload")
    return error(request, 400, f"{param or 'request'}: {first.get('msg', 'invalid')}.", param=param)


@api.exception_handler(ApplicationError)
def _refused(request, exc):
    status = 403 if exc.extra.get("code") == "permission" else 400
    return error(request, status, exc.message, exc.extra.get("code"), exc.extra.get("param"))


def _require_write(request) -> None:
    if not policy.can_write(request.api_token):
        raise HttpError(
            403,
            "This token may read only: uploading files and starting or cancelling fine-tuning jobs "
            "needs a token with the train scope.",
        )


def _page(rows, ids: list[str], after: str | None, limit: int) -> dict:
    """OpenAI's cursor page over rows (newest first) whose ids are ``ids``: those after ``after``."""
    if not 1 <= limit <= 100:
        raise HttpError(400, "limit must be from 1 to 100.")
    start = ids.index(after) + 1 if after in ids else 0
    data = rows[start : start + limit]
    return {
        "object": "list",
        "data": data,
        "has_more": start + limit < len(rows),
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def _after_pk(after: str | None, prefix: str) -> int | None:
    number = (after or "").removeprefix(prefix)
    return int(number) if number.isascii() and number.isdigit() and len(number) <= 18 else None


def _keyset(queryset, after: str | None, prefix: str, limit: int, shape) -> dict:
    """A page of rows ordered newest first by primary key, read in one query of limit + 1 rows."""
    if not 1 <= limit <= 100:
        raise HttpError(400, "limit must be from 1 to 100.")
    pk = _after_pk(after, prefix)
    rows = list((queryset.filter(pk__lt=pk) if pk else queryset).order_by("-pk")[: limit + 1])
    data = [shape(row) for row in rows[:limit]]
    return {
        "object": "list",
        "data": data,
        "has_more": len(rows) > limit,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


# Files ----------------------------------------------------------------------------------------


def _form_metadata(post) -> dict:
    """``metadata`` as a JSON object, or as the form fields ``metadata[key]`` the openai client sends
    for ``extra_body={"metadata": {...}}``."""
    out = {}
    if post.get("metadata"):
        try:
            out = json.loads(post["metadata"])
        except ValueError as problem:
            raise HttpError(400, "metadata must be a JSON object.") from problem
        if not isinstance(out, dict):
            raise HttpError(400, "metadata must be a JSON object.")
    for key in post:
        match = re.fullmatch(r"metadata\[(\w+)\]", key)
        if match:
            out[match.group(1)] = post[key]
    return out


@api.post("/files", summary="Upload a JSONL file of training records (purpose: fine-tune)")
def file_upload(request, file: File[UploadedFile], purpose: Form[str]):
    _require_write(request)
    created = services.file_create(
        token=request.api_token, file=file, purpose=purpose, metadata=_form_metadata(request.POST)
    )
    return shapes.file_object(created)


@api.get("/files", summary="Files of your teams, newest first")
def file_list(request, after: str | None = None, limit: int = 20, purpose: str | None = None):
    pending = Count("upload__records", filter=Q(upload__records__status=Record.Status.PENDING))
    files = policy.files_for_token(request.api_token).annotate(pending=pending)
    if purpose:
        files = files.filter(purpose=purpose)
    return _keyset(files, after, "file-", limit, shapes.file_object)


@api.get("/files/{file_id}", summary="A file")
def file_detail(request, file_id: str):
    return shapes.file_object(policy.get_file_for_token(request.api_token, file_id))


@api.get("/files/{file_id}/content", summary="The file's bytes, as uploaded")
def file_content(request, file_id: str):
    file = policy.get_file_for_token(request.api_token, file_id)
    if not file.upload.file:
        raise HttpError(404, f"{file.public_id}'s content is no longer stored.")
    return FileResponse(file.upload.file.open("rb"), content_type="application/jsonl", filename=file.filename)


@api.delete("/files/{file_id}", summary="Delete a file (its records still pending review are withdrawn)")
def file_delete(request, file_id: str):
    _require_write(request)
    file = policy.get_file_for_token(request.api_token, file_id)
    services.file_delete(token=request.api_token, file=file)
    return {"id": file_id, "object": "file", "deleted": True}


# Fine-tuning jobs -----------------------------------------------------------------------------


class JobIn(Schema):
    model: str
    training_file: str
    validation_file: str | None = None
    suffix: str | None = None
    seed: int | None = None
    metadata: dict | None = None
    method: dict | None = None
    hyperparameters: dict | None = None
    integrations: list | None = None


@api.post("/fine_tuning/jobs", summary="Start a fine-tune of a base model on an uploaded file")
def job_create(request, payload: JobIn):
    _require_write(request)
    if payload.integrations:
        raise HttpError(400, "integrations are not supported.")
    job = services.job_create(token=request.api_token, **payload.dict(exclude={"integrations"}))
    return shapes.job_object(job)


@api.get("/fine_tuning/jobs", summary="Your fine-tuning jobs, the browser's too, newest first")
def job_list(request, after: str | None = None, limit: int = 20):
    jobs = policy.jobs_for_token(request.api_token).select_related("base_model")
    return _keyset(jobs, after, "ftjob-", limit, shapes.job_object)


@api.get("/fine_tuning/jobs/{job_id}", summary="A fine-tuning job")
def job_detail(request, job_id: str):
    return shapes.job_object(policy.get_job_for_token(request.api_token, job_id))


@api.post("/fine_tuning/jobs/{job_id}/cancel", summary="Cancel a queued or running job")
def job_cancel(request, job_id: str):
    _require_write(request)
    job = policy.get_job_for_token(request.api_token, job_id)
    return shapes.job_object(services.job_cancel(token=request.api_token, job=job))


@api.get("/fine_tuning/jobs/{job_id}/events", summary="What the job did, newest first")
def job_events(request, job_id: str, after: str | None = None, limit: int = 20):
    events = shapes.job_events(policy.get_job_for_token(request.api_token, job_id))
    return _page(events, [e["id"] for e in events], after, limit)


@api.get("/fine_tuning/jobs/{job_id}/checkpoints", summary="The job's checkpoints you can chat with")
def job_checkpoints(request, job_id: str, after: str | None = None, limit: int = 10):
    checkpoints = shapes.job_checkpoints(policy.get_job_for_token(request.api_token, job_id))
    return _page(checkpoints, [c["id"] for c in checkpoints], after, limit)
