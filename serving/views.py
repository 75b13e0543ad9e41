"""The playground: chat with an adapter beside its base model, tokens streamed over server-sent events.

The conversation lives in the session, per adapter or job. Each turn queues two answers on the
inference worker (adapter and base model) and the page's script streams both; without script, the
form posts, waits for both answers and shows the page again.
"""

import json

from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from modelfactory import ratelimit
from modelfactory.exceptions import ApplicationError

from . import playground, policy, services


class ChatForm(forms.Form):
    message = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=4000)
    temperature = forms.FloatField(min_value=0, max_value=2, initial=0.7)
    top_p = forms.FloatField(min_value=0.01, max_value=1, initial=0.95, label="Top-p")
    max_tokens = forms.IntegerField(min_value=1, initial=128, label="Max tokens")  # upper bound: clean_sampling


def _busy(request, form):
    """The user's rate limit, hit once per message sent: None when allowed, else the refusal (a form error)."""
    busy = ratelimit.rate_hit(f"user:{request.user.pk}", settings.PLAYGROUND_RATE_LIMIT)
    if busy.allowed:
        return None
    form.add_error(None, f"Busy: at most {busy.limit} messages; try again in {busy.retry_after} s.")
    return busy


def _refused(form, busy, status):
    status = 429 if busy else status or 400
    response = JsonResponse({"errors": form.errors.get_json_data()}, status=status)
    if status != 400:
        response["Retry-After"] = str(busy.retry_after if busy else 5)
    return response


def _playground(request, target, back_url: str):
    form = ChatForm(request.POST or None)
    wants_json = "application/json" in request.headers.get("Accept", "")
    if request.method == "POST" and request.POST.get("reset"):
        playground.conversation_reset(session=request.session, target=target)
        return redirect(request.path)
    busy, busy_status = None, None
    if request.method == "POST" and form.is_valid():
        busy = _busy(request, form)
    if request.method == "POST" and form.is_valid():
        try:
            requests = playground.conversation_send(
                session=request.session, target=target, owner=f"user:{request.user.pk}", **form.cleaned_data
            )
        except ApplicationError as problem:
            form.add_error(None, problem.message)
            busy_status = problem.extra.get("status")
        else:
            if wants_json:
                return JsonResponse({side: reverse("playground_stream", args=[rid]) for side, rid in requests.items()})
            for rid in requests.values():  # no script: wait for both answers, then show the page
                services.chat_complete(request_id=rid)
            return redirect(request.path)
    if wants_json:
        return _refused(form, busy, busy_status)
    context = {
        "target": target,
        "form": form,
        "turns": playground.conversation_shown(playground.conversation_turns(session=request.session, target=target)),
        "back_url": back_url,
        "min_tokens": settings.SERVING_SPAN_MIN_TOKENS,
    }
    return render(request, "serving/playground.html", context)


@login_required
def adapter_playground(request, slug, version):
    adapter = policy.get_adapter_for_chat(request.user, slug, version)
    return _playground(
        request, services.target_for_adapter(adapter), reverse("adapter_detail", args=[adapter.slug, adapter.version])
    )


@login_required
def job_playground(request, pk):
    job = policy.get_job_for_chat(request.user, pk)
    try:
        target = services.target_for_job(job)
    except ApplicationError as problem:
        raise Http404(problem.message) from problem
    return _playground(request, target, reverse("job_detail", args=[job.pk]))


@login_required
def playground_stream(request, request_id):
    """Server-sent events of one answer: `token` events, then `done` (with attribution) or `error`."""
    if services.chat_owner(request_id=request_id) != f"user:{request.user.pk}":
        raise Http404("No such answer.")

    def events():
        for event in services.chat_events(request_id=request_id):
            yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"

    response = StreamingHttpResponse(events(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
