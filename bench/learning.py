"""Benchmark: does a fine-tune learn what its Datanet teaches? Per preset, on a generated Datanet of
invented facts, through the same trainer a job runs (held-out split, task evaluation, attribution):
accuracy of the base model and of the fine-tune on trained questions and on the same questions
worded in ways never trained, steps, wall time, tokens/s and peak RSS.

    .venv/bin/python bench/learning.py                        # every preset, the bundled model
    .venv/bin/python bench/learning.py --preset auto --set learning_rate=2e-3 --set epochs=8
    .venv/bin/python bench/learning.py --preset standard --set batch_size=1 --curve 2   # recall every 2 epochs

Each run is its own process, so its peak RSS is its own. The Datanet: 4 contributors, each teaching
60 facts of its own kind (made-up things in a made-up realm, `testkit/synthetic.py`); 40 of the
trained facts (10 a kind) are asked as trained and reworded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def write_data(directory: Path, kinds: int, facts: int, asked: int, eval_fraction: float, seed: int) -> dict:
    """The Datanet export and the two probe sets: questions on trained facts, as trained and reworded."""
    from testkit import synthetic
    from training import trainer
    from training.examples import split

    tasks = synthetic.make_tasks(kinds, facts, seed=seed)
    train_path, _, _ = synthetic.write_datanet(tasks, directory, questions_per_task=0)
    lines = [json.loads(line) for line in train_path.read_text().splitlines()]
    # The records the job will hold out (the trainer's own split), so that no probe asks about them.
    _, held = split(list(range(len(lines))), eval_fraction, trainer.TrainConfig.seed)
    held_hashes = {lines[i]["content_hash"] for i in held}
    trained, reworded = [], []
    for index, task in enumerate(tasks):
        kept = [(n, f) for n, f in enumerate(task.facts) if f"{index}-{n}" not in held_hashes][:asked]
        trained += [task.record(*fact) for _, fact in kept]
        reworded += [task.question(*fact) for _, fact in kept]
    paths = {"data": train_path, "trained": directory / "trained.jsonl", "reworded": directory / "reworded.jsonl"}
    paths["trained"].write_text("".join(json.dumps(r) + "\n" for r in trained))
    paths["reworded"].write_text("".join(json.dumps(r) + "\n" for r in reworded))
    return paths


def show(event: dict) -> None:
    """Progress on stderr: every 20th step, held-out checks and log lines."""
    kind = event["event"]
    if kind == "step" and (event["step"] % 20 == 0 or event["step"] == event["total_steps"]):
        print(
            f"  step {event['step']}/{event['total_steps']} loss {event['loss']:.3f} "
            f"{event['tokens_per_s']:.0f} tok/s {event['elapsed_s']:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    elif kind == "eval":
        print(f"  step {event['step']}: held-out loss {event['loss']:.3f}", file=sys.stderr, flush=True)
    elif kind == "log":
        print(f"  {event['message']}", file=sys.stderr, flush=True)


def curve(config, paths: dict, every: int, directory: Path) -> None:
    """The trainer's own loop, with the trained and reworded questions answered by the fine-tune every
    ``every`` epochs (at the held-out check that ends an epoch); one JSON line each on stdout, its
    elapsed seconds counted from the first step, earlier probes included."""
    from training import taskeval, trainer
    from training.evaluation import probe_questions
    from training.modeling import autocast

    run = trainer.setup(config, paths["data"], None, directory / "checkpoint", lambda message: None)
    probes = probe_questions(run.tokenizer, {k: paths[k] for k in ("trained", "reworded")}, config)
    started = time.monotonic()

    def probe(event: dict) -> None:
        show(event)
        epoch = run.position["epoch"] + 1
        if event["event"] != "eval" or (epoch % every and event["step"] < run.total_steps):
            return
        row = {"epoch": epoch, "step": event["step"], "elapsed_s": round(time.monotonic() - started)}
        for name, questions in probes.items():
            with autocast(run.device, run.compute["bf16"]):
                scored = taskeval.answer_and_score(run.model, run.tokenizer, questions, 32, run.device)
            row[name] = round(sum(s["contains"] for s in scored) / len(scored), 3)
        print(json.dumps(row), flush=True)

    trainer.train_steps(run, directory / "checkpoint", probe, lambda: False)


def run_one(args) -> dict | None:
    """One training run in this process (called in a child process)."""
    from training import presets, trainer

    preset = args.preset[0]
    settings = presets.resolve(preset, args.method, json.loads(args.overrides), records=args.records)
    config = trainer.TrainConfig.from_dict({**settings, "base_model_path": args.model})
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_data(Path(tmp), args.kinds, args.facts, args.asked, config.eval_fraction, args.seed)
        if args.curve:
            return curve(config, paths, args.curve, Path(tmp))
        started = time.monotonic()
        metrics = trainer.train(
            config,
            paths["data"],
            Path(tmp) / "out",
            progress=show,
            probes={"trained": paths["trained"], "reworded": paths["reworded"]},
        )
        wall = time.monotonic() - started
        estimate = estimated_seconds(args.model, paths["data"], settings, metrics)
    task = metrics["task"]
    return {
        "preset": preset,
        "method": metrics["method"],
        "precision": metrics["precision"],
        "settings": {k: settings[k] for k in ("lora_r", "learning_rate", "epochs", "batch_size") if k in settings},
        "base_trained": task["trained"]["base"]["accuracy"],
        "base_reworded": task["reworded"]["base"]["accuracy"],
        "trained": task["trained"]["tuned"]["accuracy"],
        "reworded": task["reworded"]["tuned"]["accuracy"],
        "trained_f1": task["trained"]["tuned"]["f1"],
        "steps": metrics["steps"],
        "best_step": metrics["best_step"],
        "train_s": metrics["train_seconds"],
        "wall_s": round(wall, 1),
        # The job's own wall time: without the reworded probe set, which only this benchmark asks (its
        # "trained" probe set takes the place of the job's own sample of trained records).
        "job_s": round(wall - task["reworded"]["seconds"], 1),
        "tokens_per_s": round(metrics["tokens"] / metrics["train_seconds"], 1),
        "samples_per_s": round(metrics["steps"] * config.batch_size / metrics["train_seconds"], 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "influence_s": (metrics.get("influence") or {}).get("seconds"),
        "estimate_s": estimate,
    }


def estimated_seconds(model: str, data: Path, settings: dict, metrics: dict) -> float:
    """The review page's time estimate for this run (training/jobs/services.py job_estimate, without Django)."""
    from datanets.prepare import token_counts
    from training import estimates

    records = [json.loads(line)["content"] for line in data.read_text().splitlines()]
    words = sum(token_counts([" ".join(str(v) for v in r.values()) for r in records]))
    per_record = estimates.record_tokens(words / len(records))
    held_out, trained = metrics["eval_examples"], metrics["train_examples"]
    parameters = sum(math.prod(t["shape"]) for t in _safetensors_header(Path(model)).values() if "shape" in t)
    result = estimates.estimate(
        parameters=parameters,
        shape=estimates.model_shape(model),
        method=settings["method"],
        rank=settings["lora_r"],
        batch_size=settings["batch_size"],
        seq_len=int(per_record),
        train_tokens=int(trained * per_record * settings["epochs"]),
        questions=min(trained, 40) + min(held_out, 40),
        attributed_tokens=int(len(records) * per_record),
        compiled=metrics.get("compiled", False),
    )
    return result["seconds"]


def _safetensors_header(model_dir: Path) -> dict:
    import struct

    header = {}
    for file in model_dir.glob("*.safetensors"):
        with open(file, "rb") as handle:
            size = struct.unpack("<Q", handle.read(8))[0]
            header.update(json.loads(handle.read(size)))
    return header


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "var/models/smollm2-135m-instruct"))
    parser.add_argument("--preset", action="append", help="preset key (repeatable); default: every preset")
    parser.add_argument("--method", default="auto")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    parser.add_argument("--kinds", type=int, default=4)
    parser.add_argument("--facts", type=int, default=60)
    parser.add_argument("--asked", type=int, default=10, help="trained facts asked per kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--curve", type=int, default=0, metavar="K", help="print recall every K epochs instead")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--records", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = run_one(args)
        if result:
            print(json.dumps(result))
        return 0
    from training import presets

    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    rows = []
    for preset in args.preset or list(presets.PRESETS):
        command = [
            sys.executable,
            __file__,
            "--child",
            "--preset",
            preset,
            "--method",
            args.method,
            "--model",
            args.model,
            "--kinds",
            str(args.kinds),
            "--facts",
            str(args.facts),
            "--asked",
            str(args.asked),
            "--seed",
            str(args.seed),
            "--overrides",
            json.dumps(overrides),
            "--records",
            str(args.kinds * args.facts),
            "--curve",
            str(args.curve),
        ]
        if args.curve:
            subprocess.run(command, check=True, cwd=ROOT)
            continue
        out = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    if args.curve:
        return 0
    print(
        f"\n{'preset':<10} {'method':<6} {'trained':>8} {'reworded':>8} {'base tr/rw':>10} {'steps':>6} "
        f"{'train s':>8} {'wall s':>7} {'job s':>6} {'est. s':>7} {'tok/s':>7} {'smp/s':>6} {'RSS MB':>7}"
    )
    for r in rows:
        print(
            f"{r['preset']:<10} {r['method']:<6} {r['trained']:>8.3f} {r['reworded']:>8.3f} "
            f"{r['base_trained']:>4.2f}/{r['base_reworded']:<4.2f} {r['steps']:>6} {r['train_s']:>8.1f} "
            f"{r['wall_s']:>7.1f} {r['job_s']:>6.1f} {r['estimate_s']:>7.0f} {r['tokens_per_s']:>7.1f} {r['samples_per_s']:>6.2f} {r['peak_rss_mb']:>7}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
