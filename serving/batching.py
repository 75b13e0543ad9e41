"""Continuous batching for the engine: one decode loop thread steps every running answer in one forward pass.

Requests that arrive together are prefilled together (their prompts left-padded in one forward pass,
before the running rows' next step, so that a new chat's first token waits for no one's answer),
then join the running batch: the batch's KV cache is one tensor per layer with the rows left-padded
to a common length, an attention mask hiding the padding and each row's own position ids. A row leaves when its answer ends, is cancelled or its
reader goes away; columns no row needs any more are cut off. The batch is bounded by a row count
and by the bytes its padded cache may take (a request waits in the queue until it fits).
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field

_END = object()  # the answer is over


@dataclass(eq=False)
class Request:
    prompt: list[int]
    adapter: str | None  # the peft adapter name, None for the base model alone
    sampling: object  # engine.Sampling
    generator: object  # torch.Generator, seeded per request
    out: object  # queue.SimpleQueue of token ids, then _END or an exception
    cancelled: bool = False  # set by the reader: drop the row at the next step
    produced: int = 0
    last: int = 0  # the last sampled token, the next step's input
    length: int = 0  # tokens in this row's cache

    @property
    def reserve(self) -> int:
        """The most cache tokens this row can come to hold."""
        return len(self.prompt) + max(1, self.sampling.max_tokens)


@dataclass
class Batch:
    """The running rows and their left-padded KV cache (a transformers DynamicCache)."""

    rows: list[Request] = field(default_factory=list)
    cache: object = None

    @property
    def width(self) -> int:
        return self.cache.get_seq_length() if self.rows else 0

    def merge(self, other: Batch) -> None:
        """Take in another batch's rows (newly prefilled ones), left-padding whichever side is shorter."""
        import torch
        import torch.nn.functional as F

        if not other.rows:
            return
        if not self.rows:
            self.rows, self.cache = other.rows, other.cache
            return
        width = max(self.width, other.width)
        for ours, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            for attr in ("keys", "values"):
                a, b = getattr(ours, attr), getattr(theirs, attr)
                a = F.pad(a, (0, 0, width - a.shape[-2], 0))
                b = F.pad(b, (0, 0, width - b.shape[-2], 0))
                setattr(ours, attr, torch.cat([a, b]))
        self.rows = self.rows + other.rows

    def keep(self, rows: list[Request]) -> None:
        """Keep only these rows, cutting the leading columns that are padding for all of them."""
        import torch

        if len(rows) == len(self.rows):
            return
        if not rows:
            self.rows, self.cache = [], None
            return
        index = torch.tensor([self.rows.index(r) for r in rows])
        start = self.width - max(r.length for r in rows)
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, start:].contiguous()
            layer.values = layer.values[index, :, start:].contiguous()
        self.rows = rows

    def step_inputs(self, device) -> dict:
        """One decoding step's inputs: each row's last token at its own position, padding masked."""
        import torch

        width = self.width
        pads = torch.tensor([width - r.length for r in self.rows], device=device)
        return {
            "input_ids": torch.tensor([[r.last] for r in self.rows], device=device),
            "position_ids": torch.tensor([[r.length] for r in self.rows], device=device),
            "attention_mask": (torch.arange(width + 1, device=device)[None, :] >= pads[:, None]).long(),
        }


_schedulers: weakref.WeakSet = weakref.WeakSet()  # those whose decode loop thread is running


@atexit.register
def _close_all() -> None:
    """End every decode loop before the interpreter finalises: a daemon thread still waiting there when
    the process exits made it abort ("terminate called without an active exception", exit status 134)."""
    for scheduler in list(_schedulers):
        scheduler.close()


class Scheduler:
    """The waiting queue and the decode loop thread (started with the first request).

    ``engine`` supplies ``init_thread()`` (run first in the loop's thread), ``prefill(requests) -> (logits,
    cache)``, ``step(batch) -> logits`` (one row each), ``pick(request, logits) -> token``, ``stop_ids`` and
    ``release(request)``."""

    def __init__(self, engine, *, max_batch: int, max_cache_tokens: int, max_prefill_tokens: int = 2048):
        self.engine, self.max_batch, self.max_cache_tokens = engine, max(1, max_batch), max_cache_tokens
        self.max_prefill_tokens = max_prefill_tokens
        self.waiting: deque[Request] = deque()
        self.batch = Batch()
        self.ready = threading.Condition()
        self.thread: threading.Thread | None = None
        self.held = 0
        self.closed = False
        self.most_rows = 0  # the largest batch stepped so far
        self.step_seconds: dict[int, tuple[int, float]] = {}  # rows -> (steps, seconds in the forward pass)

    @contextmanager
    def hold(self):
        """Queue new requests without starting them until the block ends, so that they start together."""
        with self.ready:
            self.held += 1
        try:
            yield
        finally:
            with self.ready:
                self.held -= 1
                self.ready.notify()

    def submit(self, request: Request) -> None:
        with self.ready:
            if self.closed:
                raise RuntimeError("the engine is shutting down")
            self.waiting.append(request)
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, name="engine-decode", daemon=True)
                self.thread.start()
                _schedulers.add(self)
            self.ready.notify()

    def close(self, timeout: float = 10) -> None:
        """Stop the decode loop after its current step; requests not finished get no more tokens."""
        with self.ready:
            self.closed = True
            self.ready.notify_all()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def _fits(self, request: Request, admitted: list[Request]) -> bool:
        rows = self.batch.rows + admitted
        if not rows:
            return True  # alone, a request runs whatever its size
        if len(rows) >= self.max_batch:
            return False
        widest = max(request.reserve, *(r.reserve for r in rows))
        return (len(rows) + 1) * widest <= self.max_cache_tokens

    def _admit(self) -> list[Request] | None:
        """The waiting requests that fit beside the running rows; None once the scheduler is closed."""
        with self.ready:
            while not self.closed and not self.batch.rows and (self.held or not self.waiting):
                self.ready.wait()
            if self.closed:
                return None
            admitted = []
            while (
                not self.held and self.waiting and (self.waiting[0].cancelled or self._fits(self.waiting[0], admitted))
            ):
                request = self.waiting.popleft()
                if request.cancelled:
                    self._end(request)
                else:
                    admitted.append(request)
            return admitted

    def _loop(self) -> None:
        self.engine.init_thread()
        while (admitted := self._admit()) is not None:
            for group in self._groups(admitted):
                self._guard(group, lambda g=group: self._prefill(g))
            if self.batch.rows:
                self._guard(self.batch.rows, self._step)

    def _groups(self, requests: list[Request]) -> list[list[Request]]:
        """Requests to prefill together, each group's prompts padded to its longest within a token budget."""
        groups: list[list[Request]] = []
        for request in sorted(requests, key=lambda r: len(r.prompt)):
            group = groups[-1] if groups else None
            if group is None or (len(group) + 1) * len(request.prompt) > self.max_prefill_tokens:
                groups.append([request])
            else:
                group.append(request)
        return groups

    def _guard(self, rows: list[Request], work) -> None:
        try:
            work()
        except Exception as error:  # a failed forward pass ends its rows' answers with the error
            for request in rows:
                request.out.put(error)
                self._end(request, put=False)
            self.batch.keep([r for r in self.batch.rows if r not in rows])

    def _prefill(self, group: list[Request]) -> None:
        """The prompts in one forward pass; each row's first token, then the rows still running join the batch."""
        logits, cache = self.engine.prefill(group)
        for request in group:
            request.length = len(request.prompt)
        fresh = Batch(group, cache)
        fresh.keep([r for r, row in zip(group, logits, strict=True) if self._take(r, row)])
        self.batch.merge(fresh)

    def _step(self) -> None:
        started = time.perf_counter()
        logits = self.engine.step(self.batch)
        rows = len(self.batch.rows)
        self.most_rows = max(self.most_rows, rows)
        count, seconds = self.step_seconds.get(rows, (0, 0.0))
        self.step_seconds[rows] = (count + 1, seconds + time.perf_counter() - started)
        running = []
        for request, row in zip(self.batch.rows, logits, strict=True):
            request.length += 1
            if self._take(request, row):
                running.append(request)
        self.batch.keep(running)

    def _take(self, request: Request, logits) -> bool:
        """Sample the row's next token and pass it on; False when the row's answer is over."""
        if request.cancelled:
            self._end(request)
            return False
        token = self.engine.pick(request, logits)
        if token in self.engine.stop_ids:
            self._end(request)
            return False
        request.out.put(token)
        request.last, request.produced = token, request.produced + 1
        if request.produced >= max(1, request.sampling.max_tokens):
            self._end(request)
            return False
        return True

    def _end(self, request: Request, put: bool = True) -> None:
        if put:
            request.out.put(_END)
        self.engine.release(request)
