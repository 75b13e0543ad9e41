"""Benchmark: ModelFactory's trainer against a plain reference (transformers Trainer + peft, default
collator) on the same model, data and hyperparameters. Prints samples/s, tokens/s, peak memory and
the ratio, and achieved FLOP/s as a fraction of this machine's measured matmul peak.

    .venv/bin/python bench/train.py                      # bundled SmolLM2 if imported, else a small model
    .venv/bin/python bench/train.py --model var/models/smollm2-135m-instruct --steps 30 --method qlora
    .venv/bin/python bench/train.py --processes 1,2      # ours on 1 and on 2 processes (DDP, gloo on a CPU)
    .venv/bin/python bench/train.py --processes 1,2 --parallel ddp,fsdp --method lora   # and with the base sharded

Each side runs in its own process so that its peak memory (RSS, or CUDA max allocated) is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = "the patient heart valve murmur systolic diastolic pressure artery rhythm beat left right chamber".split()


def make_data(path: Path, n: int, seed: int = 0) -> None:
    """Instruction records with answers from 5 to 150 words: lengths vary as in real Datanets."""
    rng = random.Random(seed)
    with open(path, "w") as handle:
        for i in range(n):
            answer = " ".join(rng.choices(WORDS, k=rng.randint(5, 150)))
            handle.write(
                json.dumps({"content": {"instruction": f"Describe case {i}.", "input": "", "output": answer}}) + "\n"
            )


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(args) -> dict:
    from training import launch
    from training.trainer import TrainConfig, train

    events = []
    config = TrainConfig(
        devices=args.processes_side,
        parallel=args.parallel_side,
        base_model_path=args.model,
        method=args.method,
        batch_size=args.batch,
        max_steps=args.steps,
        learning_rate=1e-4,
        max_seq_length=args.seq,
        eval_fraction=0.05,
        eval_prompts=0,
        task_eval_examples=0,
        influence_methods=[],  # training is measured: no question answering or attribution after it
        checkpoint_every=10**9,
        warmup_ratio=0.0,
        lr_scheduler="constant",
        seed=0,
    )

    def keep(event: dict) -> None:
        if event["event"] == "step":
            events.append(event)

    with tempfile.TemporaryDirectory() as out:
        if config.devices > 1:
            launch.train(config, args.data, out, keep, lambda: False)
        else:
            train(config, args.data, out, progress=keep)
        resolved = json.loads((Path(out) / "config.json").read_text())["resolved"]
    first, last = events[0], events[-1]
    # Time from the end of the first step to the end of the last: warm-up and set-up excluded.
    seconds = last["elapsed_s"] - first["elapsed_s"]
    tokens = (last["tokens_per_s"] * last["elapsed_s"]) - (first["tokens_per_s"] * first["elapsed_s"])
    return {
        "seconds": seconds,
        "samples": (len(events) - 1) * args.batch,
        "tokens": tokens,
        # Up to the end of training (the trainer's figure; with several processes, the largest rank's).
        "peak_mb": max(resolved["peak_bytes"]) / 2**20,
        "peaks_mb": [b / 2**20 for b in resolved["peak_bytes"]],
        "weights_mb": resolved.get("weights_held_bytes", resolved["weights_bytes"]) / 2**20,
    }


def run_reference(args) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        BitsAndBytesConfig,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from training.examples import load_rows, to_messages

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    kwargs = {"dtype": torch.float32}
    if args.method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
        )
        kwargs["device_map"] = {"": 0} if torch.cuda.is_available() else {"": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(args.model, **kwargs)
    model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    texts = [tokenizer.apply_chat_template(to_messages(r), tokenize=False) for r, _ in load_rows(args.data)]
    dataset = [tokenizer(t, truncation=True, max_length=args.seq) for t in texts]
    default_collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    batch_tokens = []

    def collator(features):
        batch = default_collator(features)
        batch_tokens.append(int(batch["attention_mask"].sum()))  # real tokens, padding not counted
        return batch

    marks = {}

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            marks.setdefault("first", time.perf_counter())
            marks["last"] = time.perf_counter()

    with tempfile.TemporaryDirectory() as out:
        training_args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=args.batch,
            max_steps=args.steps,
            learning_rate=1e-4,
            lr_scheduler_type="constant",
            logging_steps=10**9,
            save_strategy="no",
            report_to=[],
            seed=0,
            use_cpu=not torch.cuda.is_available(),
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model, args=training_args, train_dataset=dataset, data_collator=collator, callbacks=[Clock()]
        )
        sampler_order = list(trainer._get_train_sampler(dataset) or range(len(dataset)))
        trainer.train()
    seen = sampler_order[args.batch : args.steps * args.batch]  # the batches after the first
    tokens = sum(len(dataset[i]["input_ids"]) for i in seen)
    return {
        "seconds": marks["last"] - marks["first"],
        "samples": len(seen),
        "tokens": tokens,
        "peak_mb": peak_memory_mb(),
    }


def matmul_peak() -> float:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    n = 4096 if device == "cuda" else 1024
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    start, reps = time.perf_counter(), 20
    for _ in range(reps):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start)


def parameter_count(model_dir: str) -> int:
    from training.model_import import describe_model

    return describe_model(Path(model_dir)).parameter_count


def default_model() -> str:
    bundled = ROOT / "var" / "models" / "smollm2-135m-instruct"
    if (bundled / "model.safetensors").exists():
        return str(bundled)
    from testkit.tiny_model import build_tiny_model

    path = Path(tempfile.mkdtemp()) / "small"
    build_tiny_model(path, hidden_size=256, layers=4, heads=4, corpus=[" ".join(WORDS)] * 20, vocab_size=1024)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--method", default="qlora", choices=["qlora", "lora"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--records", type=int, default=400)
    parser.add_argument("--processes", help="ours on each of these numbers of processes (1,2), no reference")
    parser.add_argument("--side", choices=["ours", "reference"])
    parser.add_argument("--processes-side", type=int, default=1)
    parser.add_argument("--parallel", default="ddp", help="with --processes: ddp, fsdp or both (ddp,fsdp)")
    parser.add_argument("--parallel-side", default="ddp")
    parser.add_argument("--data")
    args = parser.parse_args()
    if args.side:
        result = run_ours(args) if args.side == "ours" else run_reference(args)
        print(json.dumps(result))
        return
    args.model = args.model or default_model()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.jsonl"
        make_data(data, args.records)
        results = {}
        sides = []
        for n in map(int, (args.processes or "").split(",") if args.processes else []):
            for parallel in args.parallel.split(",") if n > 1 else ["ddp"]:
                sides.append((f"ours x{n}" + (f" {parallel}" if n > 1 else ""), "ours", n, parallel))
        for name, side, processes, parallel in sides or [
            ("reference", "reference", 1, "ddp"),
            ("ours", "ours", 1, "ddp"),
        ]:
            command = [
                sys.executable,
                __file__,
                "--side",
                side,
                "--processes-side",
                str(processes),
                "--parallel-side",
                parallel,
                "--data",
                str(data),
                "--model",
                args.model,
                "--method",
                args.method,
                "--steps",
                str(args.steps),
                "--batch",
                str(args.batch),
                "--seq",
                str(args.seq),
            ]
            out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
            if out.returncode:
                print(out.stderr[-4000:])
                raise SystemExit(out.returncode)
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    import torch

    params = parameter_count(args.model)
    peak = matmul_peak()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(
        f"model {Path(args.model).name} ({params / 1e6:.1f}M parameters), {args.method}, batch {args.batch}, "
        f"{args.steps} steps, max length {args.seq}, device {device}"
    )
    print(
        f"{'':<14}{'samples/s':>10}{'tokens/s':>10}{'peak MB':>9}{'model FLOP/s':>14}{'of peak':>9}{'weights MB':>11}"
    )
    for side, r in results.items():
        flops = 6 * params * r["tokens"] / r["seconds"]
        held = f"{r['weights_mb']:>11.0f}" if "weights_mb" in r else ""
        print(
            f"{side:<14}{r['samples'] / r['seconds']:>10.2f}{r['tokens'] / r['seconds']:>10.0f}{r['peak_mb']:>9.0f}"
            f"{flops:>14.3e}{flops / peak:>9.1%}{held}"
        )
    print(
        "peak MB: a process's peak (the largest rank's with several); weights MB: the model's weights a process holds"
    )
    for side, r in results.items():
        if len(r.get("peaks_mb", [])) > 1:
            print(f"{side}: peak MB of each rank: {', '.join(f'{m:.0f}' for m in r['peaks_mb'])}")
    if args.processes:
        one = results[next(iter(results))]
        for name, r in results.items():
            speed = (r["samples"] / r["seconds"]) / (one["samples"] / one["seconds"])
            print(f"{name}: {speed:.2f}x the samples/s of {next(iter(results))}")
        return
    ours, ref = results["ours"], results["reference"]
    print(
        f"tokens/s ratio (ours / reference): {(ours['tokens'] / ours['seconds']) / (ref['tokens'] / ref['seconds']):.2f}x;"
        f" peak memory ratio: {ours['peak_mb'] / ref['peak_mb']:.2f}x; measured matmul peak {peak:.3e} FLOP/s"
    )


if __name__ == "__main__":
    main()
