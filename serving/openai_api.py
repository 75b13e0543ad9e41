"""OpenAI-compatible endpoints at /v1/: `models` and `chat/completions` (with `stream: true` as
server-sent events). ``model`` is an adapter's slug or a fine-tune job's ``fine_tuned_model``;
authentication is the API tokens (Bearer mf_...). Answers carry an extra ``attribution`` field: the spans
found verbatim in the training records."""

import json
import time

from django.http import Http404, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from ftapi import policy as ft_policy
from ftapi import shapes as ft_shapes
from modelfactory import ratelimit
from modelfactory.exceptions import ApplicationError
from publishing.services import token_authenticate
from training.models import FineTuneJob

from . import policy, services


def error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None, param=None):
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JsonResponse(body, status=status)


def _authenticate(request):
    """The API token, or an error response (401 missing or bad token, 429 over the rate limit)."""
    header = request.headers.get("Authorization", "")
    token = token_authenticate(header[7:].strip()) if header.startswith("Bearer ") else None
    if token is None:
        return None, error(
            401, "Send a valid API token: Authorization: Bearer mf_...", "invalid_request_error", "invalid_api_key"
        )
    request.api_token = token
    key, rate = ratelimit.request_quota_key(request)  # the token's one quota, shared with /api/v1
    verdict = ratelimit.rate_hit(key, rate)
    if not verdict.allowed:
        busy = error(
            429,
            f"Rate limit of {rate} reached; retry in {verdict.retry_after} s.",
            "rate_limit_error",
            "rate_limit_exceeded",
        )
        busy["Retry-After"] = str(verdict.retry_after)
        return None, busy
    request.user = token.user
    return token, None


def _target(token, model: str) -> services.Target:
    """An adapter's slug, or a fine-tune job's ``fine_tuned_model`` (ft:...:ftjob-N), which its owner
    chats with as soon as it succeeds, before anyone publishes it."""
    job_id = ft_shapes.job_id_of_model(model)
    if job_id is None:
        return services.target_for_adapter(policy.get_adapter_for_chat(token.user, model, token=token))
    job = ft_policy.get_job_for_token(token, job_id)
    if ft_shapes.fine_tuned_model(job) != model:
        raise Http404("No such model.")
    return services.target_for_job(job)


@require_GET
def models(request):
    token, failure = _authenticate(request)
    if failure:
        return failure
    seen, data = set(), []
    for adapter in policy.chat_adapters(token.user, token).select_related("team"):
        if adapter.slug in seen:
            continue  # the newest version answers for a slug
        seen.add(adapter.slug)
        data.append(
            {
                "id": adapter.slug,
                "object": "model",
                "created": int(adapter.created_at.timestamp()),
                "owned_by": adapter.team.slug,
                "version": adapter.version,
                "base_model": adapter.base_model.name,
            }
        )
    for job in ft_policy.jobs_for_token(token).filter(status=FineTuneJob.Status.SUCCEEDED)[:100]:
        data.append(
            {
                "id": ft_shapes.fine_tuned_model(job),
                "object": "model",
                "created": ft_shapes.unix(job.finished_at),
                "owned_by": ft_shapes.organization(job),
                "base_model": job.base_model.name,
            }
        )
    return JsonResponse({"object": "list", "data": data})


def _chunk(completion_id: str, created: int, model: str, delta: dict, finish_reason=None, **extra) -> str:
    body = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        **extra,
    }
    return f"data: {json.dumps(body)}\n\n"


class _Refused(Exception):
    """The request cannot be served as asked: carries the OpenAI-style error response."""

    def __init__(self, response):
        super().__init__()
        self.response = response


def _chat_request(body, token) -> tuple:
    """The target, messages and sampling a request body asks for; raises _Refused with the error to send."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise _Refused(
            error(400, "Name the adapter to use in `model` (its slug; GET /v1/models lists them).", param="model")
        )
    try:
        target = _target(token, body["model"])
    except (Http404, ApplicationError):
        message = f"The model {body['model']!r} does not exist or you do not have access to it."
        raise _Refused(error(404, message, code="model_not_found", param="model")) from None
    if body.get("n", 1) != 1:
        raise _Refused(error(400, "Only n=1 is supported.", param="n"))
    try:
        messages = services.clean_messages(body.get("messages"))
    except ApplicationError as problem:
        raise _Refused(error(400, problem.message, param="messages")) from None
    try:
        sampling = services.clean_sampling(
            temperature=body.get("temperature"),
            top_p=body.get("top_p"),
            max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
        )
    except ApplicationError as problem:
        raise _Refused(error(400, problem.message)) from None
    return target, messages, sampling


def _busy(problem: ApplicationError):
    status = problem.extra.get("status", 503)
    response = error(
        status,
        problem.message,
        "rate_limit_error" if status == 429 else "server_error",
        "too_many_requests" if status == 429 else "overloaded",
    )
    response["Retry-After"] = "5"
    return response


def _streamed(request_id: str, completion_id: str, created: int, model: str):
    def stream():
        yield _chunk(completion_id, created, model, {"role": "assistant", "content": ""})
        for event in services.chat_events(request_id=request_id):
            if event["type"] == "token":
                yield _chunk(completion_id, created, model, {"content": event["text"]})
            elif event["type"] == "done":
                yield _chunk(
                    completion_id, created, model, {}, event["finish_reason"], attribution=event.get("attribution")
                )
            elif event["type"] == "error":  # "status" events (loading the model) are the page's only
                yield f"data: {json.dumps({'error': {'message': event['message'], 'type': 'server_error'}})}\n\n"
        yield "data: [DONE]\n\n"

    response = StreamingHttpResponse(stream(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # proxies pass tokens on as they come
    return response


def _completed(request_id: str, completion_id: str, created: int, model: str):
    event = services.chat_complete(request_id=request_id)
    if event.get("type") != "done":
        return error(503, event.get("message", "The inference service failed."), "server_error")
    usage = event["usage"]
    return JsonResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": event["text"]},
                    "finish_reason": event["finish_reason"],
                }
            ],
            "usage": {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]},
            "attribution": event.get("attribution"),
        }
    )


@csrf_exempt
@require_POST
def chat_completions(request):
    token, failure = _authenticate(request)
    if failure:
        return failure
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        return error(400, "The request body is not JSON.")
    try:
        target, messages, sampling = _chat_request(body, token)
    except _Refused as refused:
        return refused.response
    try:
        request_id = services.chat_start(target=target, messages=messages, sampling=sampling, owner=f"token:{token.pk}")
    except ApplicationError as problem:
        return _busy(problem)
    completion_id, created = f"chatcmpl-{request_id}", int(time.time())
    respond = _streamed if body.get("stream") else _completed
    return respond(request_id, completion_id, created, body["model"])
