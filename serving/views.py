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

from . import policy, services

MAX_TURNS = 20


class ChatForm(forms.Form):
    message = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=4000)
    temperature = forms.FloatField(min_value=0, max_value=2, initial=0.7)
    top_p = forms.FloatField(min_value=0.01, max_value=1, initial=0.95, label="Top-p")
    max_tokens = forms.IntegerField(min_value=1, initial=128, label="Max tokens")  # upper bound: clean_sampling


def segments(text: str, attribution: dict | None) -> list[dict]:
    """The answer cut into plain text and attributed spans, for highlighting."""
    out, at = [], 0
    for span in (attribution or {}).get("spans", []):
        if span["start"] > at:
            out.append({"text": text[at : span["start"]]})
        out.append({"text": text[span["start"] : span["end"]], "span": span})
        at = span["end"]
    if at < len(text):
        out.append({"text": text[at:]})
    return out


def _turns(request, target) -> list[dict]:
    """The session's turns for this target, with answers filled in from finished requests."""
    turns = request.session.get("playground", {}).get(target.session_key, [])
    changed = False
    for turn in turns:
        for side in ("adapter", "base"):
            if turn.get(side) is None and turn["requests"].get(side):
                result = services.chat_result(request_id=turn["requests"][side])
                if result is not None:
                    turn[side] = {
                        "text": result.get("text", ""),
                        "error": result.get("message"),
                        "attribution": result.get("attribution"),
                    }
                    changed = True
    if changed:
        _save_turns(request, target, turns)
    return turns


def _save_turns(request, target, turns) -> None:
    playground = request.session.get("playground", {})
    playground[target.session_key] = turns[-MAX_TURNS:]
    request.session["playground"] = playground


def _history(turns: list[dict], side: str, message: str) -> list[dict]:
    messages = []
    for turn in turns:
        answer = turn.get(side) or {}
        if answer.get("text"):
            messages += [{"role": "user", "content": turn["user"]}, {"role": "assistant", "content": answer["text"]}]
    return messages + [{"role": "user", "content": message}]


def _playground(request, target, back_url: str):
    form = ChatForm(request.POST or None)
    wants_json = "application/json" in request.headers.get("Accept", "")
    if request.method == "POST" and request.POST.get("reset"):
        _save_turns(request, target, [])
        return redirect(request.path)
    turns = _turns(request, target)
    busy, busy_status = None, None
    if request.method == "POST" and form.is_valid():
        busy = ratelimit.rate_hit(f"user:{request.user.pk}", settings.PLAYGROUND_RATE_LIMIT)
        if busy.allowed:
            busy = None
        else:
            form.add_error(None, f"Busy: at most {busy.limit} messages; try again in {busy.retry_after} s.")
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        owner = f"user:{request.user.pk}"
        try:
            sampling = services.clean_sampling(
                temperature=data["temperature"], top_p=data["top_p"], max_tokens=data["max_tokens"]
            )
            admitted = services.chat_admit(owner=owner, count=2)  # both answers of the turn, or neither
            requests = {
                side: services.chat_start(
                    target=target,
                    messages=_history(turns, side, data["message"]),
                    sampling=sampling,
                    owner=owner,
                    use_adapter=side == "adapter",
                    request_id=request_id,
                )
                for side, request_id in zip(("adapter", "base"), admitted, strict=True)
            }
        except ApplicationError as problem:
            form.add_error(None, problem.message)
            busy_status = problem.extra.get("status")
        else:
            turns.append({"user": data["message"], "requests": requests, "adapter": None, "base": None})
            _save_turns(request, target, turns)
            if wants_json:
                return JsonResponse({side: reverse("playground_stream", args=[rid]) for side, rid in requests.items()})
            for rid in requests.values():  # no script: wait for both answers, then show the page
                services.chat_complete(request_id=rid)
            return redirect(request.path)
    if wants_json:
        status = 429 if busy else busy_status or 400
        response = JsonResponse({"errors": form.errors.get_json_data()}, status=status)
        if status != 400:
            response["Retry-After"] = str(busy.retry_after if busy else 5)
        return response
    shown = [
        {
            **turn,
            **{
                side: {**turn[side], "segments": segments(turn[side]["text"], turn[side].get("attribution"))}
                for side in ("adapter", "base")
                if turn.get(side)
            },
        }
        for turn in turns
    ]
    context = {
        "target": target,
        "form": form,
        "turns": shown,
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
