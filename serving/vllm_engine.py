"""The inference backend on vLLM (``SERVING_BACKEND=vllm``), for GPU inference workers. No Django.

``VllmEngine`` has the interface of ``serving.engine.Engine`` (``has_adapter``, ``ensure_adapter``,
``generate``, ``prompt_ids``, ``decode``, ``tokenizer``), so the playground, the ``/v1`` API, the access
policy, streaming and span attribution are the same whichever backend answers. One vLLM engine per base
model serves every adapter with multi-LoRA: each request names its adapter (a ``LoRARequest``: the
adapter's key, a stable integer id and its folder), and vLLM loads it on demand, keeps up to
``max_cpu_loras`` in host memory and ``max_loras`` on the GPU for a batch, and evicts the least recently
used: the working set is bounded by memory, not by this code. vLLM is installed apart, on GPU workers
only (``requirements-vllm.txt``): it brings its own CUDA build of torch.
"""

from __future__ import annotations

import itertools
import queue
import threading
import uuid
from collections.abc import Callable, Iterator

from .engine import AdapterRef, Chat, Sampling, Token, _Decoder

_END = object()
MISSING = (
    "SERVING_BACKEND=vllm needs vLLM on the inference worker, and a GPU: install it there with "
    "`pip install -r requirements-vllm.txt`, or set SERVING_BACKEND=engine"
)


def engine_kwargs(base_model_path: str, *, max_loras: int, max_cpu_loras: int, max_lora_rank: int, **extra) -> dict:
    """vLLM's EngineArgs for a base model with multi-LoRA."""
    return {
        "model": base_model_path,
        "enable_lora": True,
        "max_loras": max_loras,
        "max_cpu_loras": max(max_cpu_loras, max_loras),
        "max_lora_rank": max_lora_rank,
        **extra,
    }


def sampling_kwargs(sampling: Sampling, stop_ids: set[int]) -> dict:
    """vLLM's SamplingParams for our sampling settings: temperature 0 is greedy, as in the engine."""
    return {
        "temperature": sampling.temperature,
        "top_p": sampling.top_p if sampling.temperature > 0 else 1.0,
        "max_tokens": sampling.max_tokens,
        "seed": sampling.seed,
        "stop_token_ids": sorted(stop_ids),
    }


class AdapterIds:
    """A stable integer a key, from 1 (vLLM tells adapters apart by ``lora_int_id``)."""

    def __init__(self):
        self.ids: dict[str, int] = {}
        self.next = itertools.count(1)
        self.lock = threading.Lock()

    def __contains__(self, key: str) -> bool:
        return key in self.ids

    def __getitem__(self, key: str) -> int:
        with self.lock:
            if key not in self.ids:
                self.ids[key] = next(self.next)
            return self.ids[key]


def lora_kwargs(adapter: AdapterRef, ids: AdapterIds) -> dict:
    return {"lora_name": adapter.key, "lora_int_id": ids[adapter.key], "lora_path": adapter.path}


class VllmEngine(Chat):
    def __init__(self, base_model_path: str, *, max_loras: int = 8, max_cpu_loras: int = 128, max_lora_rank: int = 64):
        try:
            import torch
            from vllm import EngineArgs, LLMEngine
        except ImportError as error:
            raise RuntimeError(MISSING) from error
        if not torch.cuda.is_available():
            raise RuntimeError(MISSING)
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(base_model_path, trust_remote_code=False)
        options = engine_kwargs(
            base_model_path, max_loras=max_loras, max_cpu_loras=max_cpu_loras, max_lora_rank=max_lora_rank
        )
        self.llm = LLMEngine.from_engine_args(EngineArgs(**options))
        eos = self.llm.model_config.hf_config.eos_token_id
        self.stop_ids = {self.tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}
        self.adapters = AdapterIds()
        self.lock, self.wake = threading.Lock(), threading.Event()
        self.queues: dict[str, queue.SimpleQueue] = {}
        threading.Thread(target=self._loop, daemon=True, name="vllm-loop").start()

    def has_adapter(self, key: str) -> bool:
        return key in self.adapters

    def ensure_adapter(self, adapter: AdapterRef) -> str:
        """Give the adapter its id; vLLM loads it with the first request that names it."""
        return str(self.adapters[adapter.key])

    def generate(
        self,
        messages: list[dict],
        *,
        adapter: AdapterRef | None = None,
        sampling: Sampling | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[Token]:
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest
        from vllm.sampling_params import RequestOutputKind

        sampling = sampling or Sampling()
        params = SamplingParams(**sampling_kwargs(sampling, self.stop_ids), output_kind=RequestOutputKind.DELTA)
        lora = LoRARequest(**lora_kwargs(adapter, self.adapters)) if adapter else None
        request_id, tokens = uuid.uuid4().hex, queue.SimpleQueue()
        self.queues[request_id] = tokens
        with self.lock:
            self.llm.add_request(request_id, {"prompt_token_ids": self.prompt_ids(messages)}, params, lora_request=lora)
        self.wake.set()
        decoder, finished = _Decoder(self.tokenizer), False
        try:
            while not (should_stop is not None and should_stop()):
                token = tokens.get()
                if token is _END:
                    finished = True
                    return
                if token not in self.stop_ids:
                    yield Token(token, decoder.push(token))
        finally:
            self.queues.pop(request_id, None)
            if not finished:
                with self.lock:
                    self.llm.abort_request([request_id])

    def _loop(self) -> None:
        """Step vLLM while it has requests; hand each request its new tokens."""
        while True:
            with self.lock:
                busy = self.llm.has_unfinished_requests()
                outputs = self.llm.step() if busy else []
            for output in outputs:
                tokens = self.queues.get(output.request_id)
                if tokens is None:
                    continue
                for token in output.outputs[0].token_ids:
                    tokens.put(token)
                if output.finished:
                    tokens.put(_END)
            if not busy:
                self.wake.wait()
                self.wake.clear()
