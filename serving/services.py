"""Serving use cases: start a chat on the inference worker, stream its events, build span indexes.

The web process never loads a model: it queues ``inference.chat`` (queue "inference") and reads
the answer's events from a Redis list the worker pushes to, one list per request.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis
from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage

from accounts.contributors import contributor_handles, contributor_pseudonym
from datanets.models import Record
from modelfactory.exceptions import ApplicationError
from modelfactory.redis_client import redis_client
from publishing.models import Adapter
from training import jobs as training_jobs
from training.models import BaseModel, FineTuneJob

from . import admission, span_index

EVENTS_TTL_S = 600
RESULT_TTL_S = 24 * 3600
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Target:
    """What a chat talks to: a published adapter or a finished job's adapter."""

    key: str  # unique to these adapter files: cache folders and loaded adapters are named by it
    label: str
    base_model: BaseModel
    adapter: Adapter | None = None
    job: FineTuneJob | None = None

    @property
    def payload(self) -> dict:
        return {"adapter_id": self.adapter.pk} if self.adapter else {"job_id": self.job.pk}

    @property
    def session_key(self) -> str:
        return f"adapter:{self.adapter.pk}" if self.adapter else f"job:{self.job.pk}"


def target_for_adapter(adapter: Adapter) -> Target:
    return Target(
        f"adapter-{adapter.pk}-{adapter.manifest_sha256[:16]}",
        f"{adapter.name} v{adapter.version}",
        adapter.base_model,
        adapter=adapter,
    )


def target_for_job(job: FineTuneJob) -> Target:
    if (
        job.status != FineTuneJob.Status.SUCCEEDED
        or "adapter/adapter_model.safetensors" not in training_jobs.job_outputs(job)
    ):
        raise ApplicationError("This job has no finished adapter to chat with.")
    stamp = job.finished_at.strftime("%Y%m%d%H%M%S%f") if job.finished_at else "0"
    return Target(f"job-{job.pk}-{stamp}", job.name, job.base_model, job=job)


def target_from_payload(payload: dict) -> Target:
    if "adapter_id" in payload:
        return target_for_adapter(Adapter.objects.select_related("base_model").get(pk=payload["adapter_id"]))
    return target_for_job(FineTuneJob.objects.select_related("base_model").get(pk=payload["job_id"]))


# Redis ----------------------------------------------------------------------------------------


def _redis() -> redis.Redis:
    return redis_client()


def _events_key(request_id: str) -> str:
    return f"mf:chat:{request_id}"


def chat_push(*, request_id: str, event: dict) -> None:
    """Worker side: append one event ({"type": "token" | "done" | "error", ...}) to the request's list."""
    key = _events_key(request_id)
    client = _redis()
    client.rpush(key, json.dumps(event))
    client.expire(key, EVENTS_TTL_S)
    if event["type"] in ("done", "error"):
        client.set(f"{key}:result", json.dumps(event), ex=RESULT_TTL_S)
        owner = client.get(f"{key}:owner")
        if owner:
            admission.chat_release(client, owner=owner.decode(), request_ids=[request_id])


def chat_cancelled(*, request_id: str) -> bool:
    return bool(_redis().exists(f"{_events_key(request_id)}:cancel"))


# Chats ----------------------------------------------------------------------------------------


def clean_messages(messages) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise ApplicationError("messages must be a non-empty list of {role, content}.")
    out, size = [], 0
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or message["role"] not in ROLES:
            raise ApplicationError("Each message needs a role (system, user or assistant) and a content string.")
        content = message.get("content")
        if isinstance(content, list):  # OpenAI's content parts: keep the text ones
            texts = [part.get("text", "") for part in content if isinstance(part, dict)]
            if not all(isinstance(text, str) for text in texts):
                raise ApplicationError('A content part\'s "text" must be a string.')
            content = "".join(texts)
        if not isinstance(content, str):
            raise ApplicationError("Each message needs a role (system, user or assistant) and a content string.")
        size += len(content)
        out.append({"role": message["role"], "content": content})
    if size > settings.SERVING_MAX_PROMPT_CHARS:
        raise ApplicationError(f"The conversation is longer than {settings.SERVING_MAX_PROMPT_CHARS} characters.")
    if out[-1]["role"] != "user":
        raise ApplicationError("The last message must be the user's.")
    return out


def clean_sampling(*, temperature=None, top_p=None, max_tokens=None) -> dict:
    try:
        sampling = {
            "temperature": 0.7 if temperature is None else float(temperature),
            "top_p": 1.0 if top_p is None else float(top_p),
            "max_tokens": settings.SERVING_DEFAULT_MAX_TOKENS if max_tokens is None else int(max_tokens),
        }
    except (TypeError, ValueError, OverflowError) as error:  # OverflowError: int(1e400), which JSON reads as inf
        raise ApplicationError("temperature and top_p are numbers, max_tokens an integer.") from error
    if not 0 <= sampling["temperature"] <= 2:
        raise ApplicationError("temperature must be between 0 and 2.")
    if not 0 < sampling["top_p"] <= 1:
        raise ApplicationError("top_p must be in (0, 1].")
    if not 1 <= sampling["max_tokens"] <= settings.SERVING_MAX_TOKENS:
        raise ApplicationError(f"max_tokens must be between 1 and {settings.SERVING_MAX_TOKENS}.")
    return sampling


def chat_admit(*, owner: str, count: int = 1) -> list[str]:
    """Request ids for answers the owner may queue now, or an ApplicationError saying it is busy."""
    return admission.chat_admit(_redis(), owner=owner, count=count)


def chat_start(
    *,
    target: Target,
    messages: list[dict],
    sampling: dict,
    owner: str,
    use_adapter: bool = True,
    request_id: str | None = None,
) -> str:
    """Queue one answer on the inference worker (admitted now, unless ``request_id`` was admitted
    already); returns the request id its events are read by."""
    from .tasks import chat_task

    request_id = request_id or chat_admit(owner=owner)[0]
    _redis().set(f"{_events_key(request_id)}:owner", owner, ex=RESULT_TTL_S)
    chat_task.delay(request_id, target.payload, messages, sampling, use_adapter)
    return request_id


def chat_owner(*, request_id: str) -> str | None:
    value = _redis().get(f"{_events_key(request_id)}:owner")
    return value.decode() if value else None


def chat_events(*, request_id: str, timeout_s: float | None = None) -> Iterator[dict]:
    """Events of one answer as the worker pushes them, ending with "done" or "error". Closing the
    iterator early (the client went away) asks the worker to stop."""
    client = _redis()
    key = _events_key(request_id)
    timeout_s = timeout_s or settings.SERVING_TIMEOUT_S
    finished = False
    try:
        while True:
            item = client.blpop([key], timeout=timeout_s)
            if item is None:
                finished = True
                yield {
                    "type": "error",
                    "message": f"The inference service did not answer within {timeout_s:g} s; "
                    "is the inference worker running (see /healthz)?",
                }
                return
            event = json.loads(item[1])
            finished = event["type"] in ("done", "error")
            yield event
            if finished:
                return
    finally:
        if not finished:
            client.set(f"{key}:cancel", 1, ex=EVENTS_TTL_S)


def chat_result(*, request_id: str) -> dict | None:
    """The final event of a finished answer (kept a day), or None while it runs."""
    value = _redis().get(f"{_events_key(request_id)}:result")
    return json.loads(value) if value else None


def chat_complete(*, request_id: str) -> dict:
    """Wait for the whole answer."""
    last = {}
    for event in chat_events(request_id=request_id):
        last = event
    return last


# Files the inference worker needs --------------------------------------------------------------


def _cache_dir(kind: str, key: str) -> Path:
    return Path(settings.SERVING_CACHE_DIR) / kind / key


def _publish_dir(tmp: Path, final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(final)
    except OSError:  # another thread got there first: same content
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def adapter_local_dir(*, target: Target) -> Path:
    """The adapter's PEFT folder on this machine: from the signed zip, or from a job's outputs."""
    final = _cache_dir("adapters", target.key)
    if (final / "adapter_model.safetensors").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent))
    names = ("adapter_config.json", "adapter_model.safetensors")
    if target.adapter:
        with default_storage.open(target.adapter.zip_name, "rb") as handle, zipfile.ZipFile(handle) as archive:
            for name in names:
                with archive.open(f"adapter/{name}") as source, open(tmp / name, "wb") as out:
                    shutil.copyfileobj(source, out)
    else:
        outputs = training_jobs.job_outputs(target.job)
        for name in names:
            with default_storage.open(outputs[f"adapter/{name}"], "rb") as source, open(tmp / name, "wb") as out:
                shutil.copyfileobj(source, out)
    return _publish_dir(tmp, final)


def _index_records(target: Target):
    versions = (target.adapter.datanet_versions if target.adapter else target.job.datanet_versions).all()
    return (
        Record.objects.filter(versions__in=versions)
        .select_related("datanet")
        .distinct()
        .order_by("id")
        .only("id", "content", "content_hash", "contributor_id", "datanet__slug")
    )


def _contributor_names(target: Target) -> dict[str, str]:
    if target.adapter:
        return {c["id"]: c.get("handle") or c["id"] for c in target.adapter.manifest["contributors"]}
    return contributor_handles()


def span_index_ensure(*, target: Target) -> Path:
    """The target's span index on this machine: downloaded from storage, or built there and uploaded."""
    from training import examples

    final = _cache_dir("span-index", target.key)
    files = (*span_index.FILES, "records.json")
    if (final / "records.json").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent))
    prefix = f"serving/span-index/{target.key}"
    if default_storage.exists(f"{prefix}/records.json"):
        for name in files:
            with default_storage.open(f"{prefix}/{name}", "rb") as source, open(tmp / name, "wb") as out:
                shutil.copyfileobj(source, out)
        return _publish_dir(tmp, final)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(target.base_model.local_path, trust_remote_code=False)
    names = _contributor_names(target)
    table = []

    def token_ids():
        for record in _index_records(target).iterator(chunk_size=2000):
            pseudonym = contributor_pseudonym(record.contributor_id)
            table.append(
                {
                    "id": record.pk,
                    "content_hash": record.content_hash,
                    "datanet": record.datanet.slug,
                    "contributor": names.get(pseudonym, pseudonym),
                }
            )
            messages = examples.to_messages(record.content)
            if messages is None:
                yield tokenizer(record.content["text"], add_special_tokens=False)["input_ids"]
            else:
                yield examples.template_ids(tokenizer, messages, generation_prompt=False)

    span_index.build(token_ids(), tmp)
    (tmp / "records.json").write_text(json.dumps(table))
    for name in files:
        if not default_storage.exists(f"{prefix}/{name}"):
            with open(tmp / name, "rb") as handle:
                default_storage.save(f"{prefix}/{name}", File(handle))
    return _publish_dir(tmp, final)


def span_index_build(*, adapter: Adapter) -> dict:
    """At publish time: build the adapter's span index into storage (idempotent)."""
    directory = span_index_ensure(target=target_for_adapter(adapter))
    return json.loads((directory / "meta.json").read_text())


def answer_spans(*, index_dir: Path, index, tokenizer, answer_ids: list[int]) -> dict:
    """Spans of the answer found verbatim in the training records, with their records and contributors."""
    from .engine import char_offsets

    min_tokens = settings.SERVING_SPAN_MIN_TOKENS
    spans = index.find_spans(answer_ids, min_tokens)
    if not spans:
        return {
            "min_tokens": min_tokens,
            "spans": [],
            "note": f"No span of {min_tokens} or more tokens of this answer occurs in the training records.",
        }
    table = json.loads((index_dir / "records.json").read_text())
    offsets = char_offsets(tokenizer, answer_ids)
    text = tokenizer.decode(answer_ids, skip_special_tokens=True)
    out = []
    for span in spans:
        start, end = offsets[span.start], offsets[span.end]
        records = [table[r] for r in span.records]
        out.append(
            {
                "start": start,
                "end": end,
                "text": text[start:end],
                "tokens": span.end - span.start,
                "occurrences": span.occurrences,
                "contributor": records[0]["contributor"],
                "record": records[0],
                "records": records,
            }
        )
    covered = sum(s["tokens"] for s in out)
    return {
        "min_tokens": min_tokens,
        "spans": out,
        "note": f"{covered} of {len(answer_ids)} tokens occur verbatim in {len(out)} span(s) of the training records.",
    }
