"""Inference engine: one base model in memory, LoRA adapters on it, concurrent answers decoded together. No Django.

Adapters are loaded into one peft ``PeftModel`` with ``load_adapter`` (removed with
``delete_adapter``); the loaded adapters form an LRU bounded by bytes (and by count, if one is
set), and none is ever merged into the base. One decode loop thread (``batching.Scheduler``) runs every answer in
progress: requests that arrive together are prefilled in one forward pass, then each decoding step
is one forward pass for all running rows, each row with its own KV cache row, position and adapter.
When all rows share an adapter (or none) the LoRA layers' active-adapter flags are set directly,
as ``set_adapter`` does but without its walk over every module; when they differ, the base layers
run once for the whole batch and ``lora_batch.MixedLora`` adds each row's own LoRA delta.
``generate`` only reads its request's tokens from a queue.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from .batching import _END, Batch, Request, Scheduler

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
_UNKNOWN = object()


@dataclass(frozen=True)
class AdapterRef:
    """An adapter to serve: a unique key (changes when the files do) and its PEFT folder."""

    key: str
    path: str


@dataclass
class Sampling:
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 256
    seed: int | None = None


@dataclass
class Token:
    id: int
    text: str  # the text this token completes; "" while a multi-byte character is still partial


def _adapter_bytes(path: str) -> int:
    return sum(f.stat().st_size for f in Path(path).glob("*.safetensors"))


def _token_bytes(model) -> int:
    """Bytes one token takes in the KV cache: keys and values in every layer."""
    config = model.config.get_text_config()
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return 2 * config.num_hidden_layers * heads * head_dim * model.dtype.itemsize


def _name(key: str) -> str:
    return "a_" + "".join(c if c.isalnum() else "_" for c in key)  # peft adapter names become module keys


class Chat:
    """What every backend does with its tokenizer: a conversation's prompt ids, an answer's text."""

    tokenizer: object

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


class Engine(Chat):
    def __init__(
        self,
        base_model_path: str,
        *,
        max_adapters: int = 0,
        max_adapter_bytes: int = 2 << 30,
        max_batch: int = 16,
        max_cache_bytes: int = 1 << 30,
        cpu_threads: int = 1,
    ):
        """``max_adapters``: adapters kept loaded (0: as many as ``max_adapter_bytes`` holds); ``cpu_threads``:
        math threads of the decode loop on a CPU (0: PyTorch's default, one a core)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.cpu_threads = cpu_threads
        dtype = torch.bfloat16 if self.device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(base_model_path, trust_remote_code=False)
        self.base = AutoModelForCausalLM.from_pretrained(
            base_model_path, trust_remote_code=False, use_safetensors=True, dtype=dtype
        ).to(self.device)
        self.base.eval()
        if self.device == "cpu":
            from .packed_linear import pack_linears

            pack_linears(self.base)
        self.model = None  # the PeftModel, once an adapter is loaded (it wraps self.base in place)
        self.loaded: OrderedDict[str, int] = OrderedDict()  # adapter name -> bytes, least recently used first
        self.in_use: dict[str, int] = {}
        self.max_adapters, self.max_adapter_bytes = max_adapters, max_adapter_bytes
        self.lock = threading.RLock()
        eos = self.base.generation_config.eos_token_id
        self.stop_ids = {self.tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}
        self.last_switch_s = 0.0
        self.layers = None  # the LoRA layers, found once per change of loaded adapters
        self.state = _UNKNOWN  # the adapter the layers are set to (None: disabled)
        self.mixed = None  # lora_batch.MixedLora for the loaded adapters, built at the first mixed step
        self.scheduler = Scheduler(
            self, max_batch=max_batch, max_cache_tokens=max_cache_bytes // _token_bytes(self.base)
        )

    # Adapters ---------------------------------------------------------------------------------

    def has_adapter(self, key: str) -> bool:
        return _name(key) in self.loaded

    def ensure_adapter(self, adapter: AdapterRef) -> str:
        """Load the adapter if it is not loaded (evicting the least recently used); return its name."""
        from peft import PeftModel

        name = _name(adapter.key)
        with self.lock:
            if name in self.loaded:
                self.loaded.move_to_end(name)
                return name
            if self.model is None:
                self.model = PeftModel.from_pretrained(self.base, adapter.path, adapter_name=name)
            else:
                self.model.load_adapter(adapter.path, adapter_name=name)
            self.model.eval()
            self.loaded[name] = 2 * _adapter_bytes(adapter.path)  # peft's weights, and their slot in self.mixed
            self._evict(keep=name)
            self.layers, self.state = None, _UNKNOWN  # peft changed the layers and their flags
            if not (self.mixed and self.mixed.add(name)):  # built again at the next mixed step
                if self.mixed:
                    self.mixed.remove()
                self.mixed = None
            return name

    def _evict(self, keep: str) -> None:
        def over() -> bool:
            count = self.max_adapters and len(self.loaded) > self.max_adapters
            return count or sum(self.loaded.values()) > self.max_adapter_bytes

        for name in list(self.loaded):
            if not over():
                break
            if name == keep or self.in_use.get(name):
                continue
            if name in self.model.active_adapters:
                self.model.set_adapter(keep)
            self.model.delete_adapter(name)
            del self.loaded[name]
            if self.mixed:
                self.mixed.drop(name)
            elif self.mixed is False:  # the adapter that needed peft's path may be the one gone
                self.mixed = None

    def _activate(self, name: str | None):
        """Make this adapter (None: none, the base model alone) the one the next step runs with.

        peft's ``set_adapter`` and ``disable_adapter`` walk every module and toggle gradients (tens of
        ms on a 135M model); serving only needs each LoRA layer's active-adapter and disabled flags, so
        those are set directly on a cached list of the layers."""
        if self.model is None:
            return self.base
        if self.state != name:
            started = time.perf_counter()
            if self.layers is None:
                from peft.tuners.tuners_utils import BaseTunerLayer

                self.layers = [m for m in self.model.modules() if isinstance(m, BaseTunerLayer)]
            for layer in self.layers:
                layer._disable_adapters = name is None
                if name is not None:
                    layer._active_adapter = [name]
            if name is not None:
                self.model.base_model.active_adapter = name
            self.state = name
            self.last_switch_s = time.perf_counter() - started
        return self.model

    # Generation -------------------------------------------------------------------------------

    def generate(
        self,
        messages: list[dict],
        *,
        adapter: AdapterRef | None = None,
        sampling: Sampling | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[Token]:
        """Yield the answer's tokens as they are generated (the end-of-turn token is not yielded).

        The answer is decoded by the engine's decode loop, batched with the others running; this
        iterator reads its tokens, checks ``should_stop`` between them, and cancels the request when
        it stops early or is closed."""
        import torch

        sampling = sampling or Sampling()
        with self.lock:  # the adapter counts as in use from here, so that no load evicts it before it runs
            name = self.ensure_adapter(adapter) if adapter else None
            if name:
                self.in_use[name] = self.in_use.get(name, 0) + 1
        generator = torch.Generator(device="cpu")
        generator.manual_seed(sampling.seed if sampling.seed is not None else torch.seed())
        request = Request(self.prompt_ids(messages), name, sampling, generator, queue.SimpleQueue())
        self.scheduler.submit(request)
        decoder = _Decoder(self.tokenizer)
        try:
            while not (should_stop is not None and should_stop()):
                token = request.out.get()
                if token is _END:
                    return
                if isinstance(token, BaseException):
                    raise token
                yield Token(token, decoder.push(token))
        finally:
            request.cancelled = True

    # The decode loop's side (batching.Scheduler calls these from its thread) ---------------------

    def init_thread(self) -> None:
        """The decode loop's math threads (PyTorch's OpenMP threads are set per calling thread). On 2
        cores, with the chats' threads reading tokens beside it, one thread decoded 8 rows 1.6x faster
        than two (README, Serving figures): the two stall each other at every op of a step."""
        import torch

        if self.device == "cpu" and self.cpu_threads:
            torch.set_num_threads(self.cpu_threads)

    def prefill(self, requests: list[Request]):
        """Run the requests' prompts in one forward pass (left-padded); each one's last logits, and their cache."""
        import torch
        from transformers import DynamicCache

        longest = max(len(r.prompt) for r in requests)
        pads = [longest - len(r.prompt) for r in requests]
        inputs = {
            "input_ids": torch.tensor(
                [[0] * p + r.prompt for p, r in zip(pads, requests, strict=True)], device=self.device
            )
        }
        if any(pads):
            mask = torch.tensor([[0] * p + [1] * (longest - p) for p in pads], device=self.device)
            inputs["attention_mask"], inputs["position_ids"] = mask, (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        return self._forward([r.adapter for r in requests], inputs, cache), cache

    def step(self, batch: Batch):
        """One decoding step for every row of the batch, each row with its own adapter (or none)."""
        return self._forward([r.adapter for r in batch.rows], batch.step_inputs(self.device), batch.cache)

    def _forward(self, names: list[str | None], inputs: dict, cache):
        """Each row's last logits; row i runs with adapter names[i] (None: the base model alone)."""
        import torch

        with self.lock, torch.inference_mode():
            if len(set(names)) == 1:
                model, rows = self._activate(names[0]), nullcontext()
            else:
                model, rows = self._mixed(names, inputs)
            with rows:
                out = model(**inputs, past_key_values=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1]

    def _mixed(self, names: list[str | None], inputs: dict):
        """The model and context for rows on different adapters (None: the base model)."""
        from .lora_batch import MixedLora

        if self.mixed is None:
            self.mixed = MixedLora.build(self.model, list(self.loaded)) or False
        if self.mixed:
            self.state = _UNKNOWN  # the block switches peft's own LoRA path off
            return self.model, self.mixed.rows(names, self.device)
        model = self._activate(next(n for n in names if n))  # enables the LoRA layers for peft's mixed batch
        inputs["adapter_names"] = [n or "__base__" for n in names]
        return model, nullcontext()

    def pick(self, request: Request, logits) -> int:
        return _sample(logits.float(), request.sampling, request.generator)

    def release(self, request: Request) -> None:
        if request.adapter:
            with self.lock:
                self.in_use[request.adapter] -= 1


def _sample(logits, sampling: Sampling, generator) -> int:
    """Greedy at temperature 0, else nucleus sampling. The nucleus is found among the top k tokens, k
    growing until they hold top_p of the mass: a full sort of the vocabulary takes milliseconds a row."""
    import torch

    if sampling.temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p >= 1:
        return int(torch.multinomial(probs.cpu(), 1, generator=generator))
    k = min(64, probs.numel())
    while True:
        top, index = torch.topk(probs, k)
        if k == probs.numel() or float(top.sum()) >= sampling.top_p:
            break
        k = min(k * 8, probs.numel())
    keep = torch.cumsum(top, dim=-1) - top < sampling.top_p
    return int(index[torch.multinomial((top * keep).cpu(), 1, generator=generator)])


class _Decoder:
    """Incremental detokenisation: emit text only once it no longer ends in a partial character."""

    def __init__(self, tokenizer):
        self.tokenizer, self.ids, self.prefix, self.read = tokenizer, [], 0, 0

    def push(self, token: int) -> str:
        self.ids.append(token)
        before = self.tokenizer.decode(self.ids[self.prefix : self.read], skip_special_tokens=True)
        after = self.tokenizer.decode(self.ids[self.prefix :], skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before) :]
        return ""


def char_offsets(tokenizer, ids: list[int]) -> list[int]:
    """offsets[i]: where token i starts in the decoded answer (offsets[len(ids)] is its length)."""
    return [len(tokenizer.decode(ids[:i], skip_special_tokens=True)) for i in range(len(ids) + 1)]
