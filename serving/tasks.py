"""Celery tasks of serving: answers on the "inference" queue's long-lived worker, span indexes on "default".

The inference worker keeps its engines (one per base model, adapters on it) and span indexes in this
process for its lifetime; it runs with a thread pool, one thread per answer reading its tokens, while
the engine's decode loop decodes all of them together.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from celery import shared_task
from django.conf import settings

from publishing.models import Adapter

from . import services, span_index

_lock = threading.Lock()
_engines: OrderedDict[str, object] = OrderedDict()
_indexes: OrderedDict[str, object] = OrderedDict()


def new_engine(base_model_path: str):
    """The configured backend's engine: serving/engine.py, or vLLM (serving/vllm_engine.py) on GPU workers."""
    if settings.SERVING_BACKEND == "vllm":
        from .vllm_engine import VllmEngine

        return VllmEngine(
            base_model_path,
            max_loras=settings.SERVING_VLLM_MAX_LORAS,
            max_cpu_loras=settings.SERVING_VLLM_MAX_CPU_LORAS,
            max_lora_rank=settings.SERVING_VLLM_MAX_LORA_RANK,
        )
    from .engine import Engine

    return Engine(
        base_model_path,
        max_adapters=settings.SERVING_MAX_ADAPTERS,
        max_adapter_bytes=settings.SERVING_MAX_ADAPTER_BYTES,
        max_batch=settings.SERVING_MAX_BATCH,
        max_cache_bytes=settings.SERVING_MAX_CACHE_BYTES,
        cpu_threads=settings.SERVING_CPU_THREADS,
    )


def engine_for(base_model_path: str):
    """This process's engine for a base model, loading it once; the least recently used goes first."""
    with _lock:
        if base_model_path in _engines:
            _engines.move_to_end(base_model_path)
            return _engines[base_model_path]
        while len(_engines) >= settings.SERVING_MAX_BASE_MODELS:
            _engines.popitem(last=False)
        engine = new_engine(base_model_path)
        _engines[base_model_path] = engine
        return engine


def index_for(target: services.Target):
    with _lock:
        if target.key in _indexes:
            _indexes.move_to_end(target.key)
            return _indexes[target.key]
    directory = services.span_index_ensure(target=target)
    index = (directory, span_index.SpanIndex(directory))
    with _lock:
        _indexes[target.key] = index
        while len(_indexes) > 16:
            _indexes.popitem(last=False)
    return index


STAGES = {
    "model": "Loading the model: the first answer waits for it, later ones stream at once",
    "adapter": "Loading the adapter",
}


def _prepare(request_id: str, target: services.Target, use_adapter: bool):
    """The engine and adapter for one answer. What is not loaded yet is loaded first, with a "status" event
    before each stage ({"stage", "message", "step", "steps"}) so that the page says what it waits for."""
    from .engine import AdapterRef

    path = target.base_model.local_path
    loaded = _engines.get(path)
    stages = [] if loaded else ["model"]
    if use_adapter and (loaded is None or not loaded.has_adapter(target.key)):
        stages.append("adapter")

    def say(stage: str) -> None:
        event = {
            "type": "status",
            "stage": stage,
            "message": STAGES[stage],
            "step": stages.index(stage) + 1,
            "steps": len(stages),
        }
        services.chat_push(request_id=request_id, event=event)

    if "model" in stages:
        say("model")
    engine = engine_for(path)
    if not use_adapter:
        return engine, None
    if "adapter" in stages:
        say("adapter")
    adapter = AdapterRef(target.key, str(services.adapter_local_dir(target=target)))
    engine.ensure_adapter(adapter)
    return engine, adapter


@shared_task(name="inference.chat", ignore_result=True)
def chat_task(request_id: str, target: dict, messages: list[dict], sampling: dict, use_adapter: bool = True) -> None:
    """Generate one answer, pushing its tokens to Redis as they come, then its attribution."""
    from .engine import Sampling

    try:
        target = services.target_from_payload(target)
        engine, adapter = _prepare(request_id, target, use_adapter)
        ids, finish = [], "stop"
        tokens = engine.generate(
            messages,
            adapter=adapter,
            sampling=Sampling(**sampling),
            should_stop=lambda: services.chat_cancelled(request_id=request_id),
        )
        for token in tokens:
            ids.append(token.id)
            if token.text:
                services.chat_push(request_id=request_id, event={"type": "token", "text": token.text})
        if len(ids) >= sampling["max_tokens"]:
            finish = "length"
        done = {
            "type": "done",
            "text": engine.decode(ids),
            "finish_reason": finish,
            "usage": {"prompt_tokens": len(engine.prompt_ids(messages)), "completion_tokens": len(ids)},
        }
        if use_adapter:
            index_dir, index = index_for(target)
            done["attribution"] = services.answer_spans(
                index_dir=index_dir, index=index, tokenizer=engine.tokenizer, answer_ids=ids
            )
        services.chat_push(request_id=request_id, event=done)
    except Exception as error:  # the web side is waiting: tell it, then let the worker log it
        services.chat_push(request_id=request_id, event={"type": "error", "message": f"Generation failed: {error}"})
        raise


@shared_task(name="serving.span_index_build")
def span_index_build_task(adapter_id: int) -> dict | None:
    """Idempotent: builds the published adapter's span index into storage unless it is there."""
    adapter = Adapter.objects.select_related("base_model").filter(pk=adapter_id).first()
    if adapter is None:
        return None
    return services.span_index_build(adapter=adapter)
