"""Benchmark and proof of influence attribution on generated Datanets with known answers.

    .venv/bin/python bench/influence.py                    # K=4 tasks, 3 data seeds, 6 training seeds
    .venv/bin/python bench/influence.py --k 6 --seeds 2
    .venv/bin/python bench/influence.py --cost-on var/models/smollm2-135m-instruct --epochs 1 [--methods tracincp]

For each data seed: a tiny model (testkit.synthetic's tasks, one per contributor) is trained for
real with attribution on, then retrained once without each contributor (leave-one-contributor-out,
LOO) under each training seed. Prints, per method:
- top-1 accuracy and AUC: for each held-out question, does the contributor who taught its task have
  the highest influence, and how well do record scores separate that contributor's records;
- Spearman correlation between the method's contributor x question scores and the real change in
  per-question held-out loss when that contributor is left out (averaged over training seeds), and
  the noise of that ground truth across training seeds, and how well one training seed's retrainings
  agree with the others' mean (the most a method read off one run can expect);
- a canary contributor copying held-out answers: top-1 on the questions it copies;
- cost: attribution seconds as a fraction of training seconds on the same run, gradient memory and
  peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from attribution import influence  # noqa: E402
from testkit import synthetic  # noqa: E402
from testkit.ranks import spearman  # noqa: E402
from testkit.tiny_model import build_tiny_model  # noqa: E402
from training import presets, trainer  # noqa: E402
from training.evaluation import evaluate_loss  # noqa: E402
from training.examples import load_examples  # noqa: E402
from training.modeling import load_model  # noqa: E402


@dataclass
class Setup:
    """The runs a seed makes: the tiny model (built per data seed) with the settings of the last landings, or a
    real base model under the wizard's default preset (standard, LoRA)."""

    epochs: float = 3
    bundled: str | None = None  # a base model's folder
    facts: int = 12  # per task

    def model(self, work: Path, corpus: list[str], seed: int) -> Path:
        if self.bundled:
            return Path(self.bundled)
        return build_tiny_model(work / "model", corpus=corpus, hidden_size=128, seed=seed)

    def config(self, model_dir: Path, seed: int, methods: list[str], records: int) -> trainer.TrainConfig:
        if self.bundled:
            settings = presets.resolve("standard", "lora", records=records)
            settings.update(base_model_path=str(model_dir), eval_prompts=0, task_eval_examples=0)
            return trainer.TrainConfig.from_dict({**settings, "seed": seed, "influence_methods": methods})
        return trainer.TrainConfig(
            base_model_path=str(model_dir),
            method="lora",
            learning_rate=0.005,
            epochs=self.epochs,
            batch_size=4,
            max_seq_length=96,
            eval_prompts=0,
            seed=seed,
            influence_methods=methods,
        )


def per_question_loss(config: trainer.TrainConfig, adapter_dir: Path, questions: Path) -> np.ndarray:
    """Held-out loss of each question (mean per response token) under the trained adapter."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    model, tokenizer, _ = load_model(config)
    set_peft_model_state_dict(model, load_file(str(adapter_dir / "adapter_model.safetensors")))
    examples = load_examples(tokenizer, questions, config.max_seq_length)
    return np.array([evaluate_loss(model, [e], 1, "cpu") for e in examples])


def without(train_path: Path, contributor: str, target: Path) -> Path:
    lines = [line for line in train_path.read_text().splitlines() if json.loads(line)["contributor_id"] != contributor]
    target.write_text("\n".join(lines) + "\n")
    return target


def retrain_agreement(deltas: np.ndarray) -> dict:
    """How far the ground truth agrees with itself: one training seed's retrainings against the mean of the
    others' (what a method read off one run could reach at best), per pair and per contributor."""
    pairs, contributors = [], []
    for i in range(len(deltas)):
        rest = np.delete(deltas, i, axis=0).mean(axis=0)
        pairs.append(spearman(deltas[i].ravel(), rest.ravel()))
        contributors.append(spearman(deltas[i].mean(axis=1), rest.mean(axis=1)))
    return {"retrain_pairs": float(np.mean(pairs)), "retrain_contributors": float(np.mean(contributors))}


def run_seed(k: int, seed: int, train_seeds: int, setup: Setup, work: Path, canary_records: int) -> dict:
    tasks = synthetic.make_tasks(k, setup.facts, seed=seed)
    train_path, questions, owners = synthetic.write_datanet(tasks, work / "data")
    lines = train_path.read_text().splitlines()
    corpus = [" ".join(json.loads(line)["content"].values()) for line in lines]
    model_dir = setup.model(work, corpus, seed)

    config = setup.config(model_dir, seed, list(influence.METHODS), len(lines))
    started = time.monotonic()
    metrics = trainer.train(config, train_path, work / "full", eval_path=questions)
    total_s = time.monotonic() - started
    attribution_s = metrics["influence"]["seconds"]
    records = json.loads((work / "full" / "influence.json").read_text())["records"]
    contributors = [str(r["contributor"]) for r in records]
    scores = dict(np.load(work / "full" / "influence.npz"))
    names = sorted(set(contributors))
    owner = np.array(contributors)
    per_contributor = {m: np.stack([s[owner == n].sum(axis=0) for n in names]) for m, s in scores.items()}

    # Leave-one-contributor-out ground truth: loss change per (contributor, question), per training seed.
    deltas = []
    for train_seed in range(train_seeds):
        plain = setup.config(model_dir, train_seed, [], len(lines))
        trainer.train(plain, train_path, work / "base", eval_path=questions)
        full_loss = per_question_loss(plain, work / "base" / "adapter", questions)
        rows = []
        for name in names:
            subset = without(train_path, name, work / "subset.jsonl")
            trainer.train(plain, subset, work / "loo", eval_path=questions)
            rows.append(per_question_loss(plain, work / "loo" / "adapter", questions) - full_loss)
        deltas.append(np.stack(rows))  # [contributors, questions]; positive: leaving it out hurt
    truth = np.mean(deltas, axis=0)
    noise = float(np.std(deltas, axis=0).mean()) if train_seeds > 1 else float("nan")
    ceiling = retrain_agreement(np.stack(deltas)) if train_seeds > 1 else {}

    result = {
        "seed": seed,
        "train_s": total_s - attribution_s,
        "attribution_s": attribution_s,
        "gradient_bytes": metrics["influence"]["gradient_bytes"],
        "methods": {},
        "truth_noise": noise,
        **ceiling,
        "truth_mean_abs": float(np.abs(truth).mean()),
    }

    def shares(rule: str, s: np.ndarray) -> np.ndarray:
        table = influence.contributor_table(s, contributors, bootstrap=10, seed=0, aggregation=rule)
        by = {row["contributor"]: row["share"] for row in table}
        return np.array([by[name] for name in names])

    for method, s in scores.items():
        accuracy = synthetic.question_accuracy(s, contributors, owners)
        result["methods"][method] = {
            **accuracy,
            "spearman_pairs": spearman(per_contributor[method].ravel(), truth.ravel()),
            "spearman_contributors": spearman(per_contributor[method].mean(axis=1), truth.mean(axis=1)),
            **{f"spearman_{rule}": spearman(shares(rule, s), truth.mean(axis=1)) for rule in influence.AGGREGATIONS},
        }

    # The canary: a contributor copying held-out answers of task 0 word for word.
    train_path, questions, owners = synthetic.write_datanet(
        tasks, work / "canary", canary_task=0, canary_records=canary_records
    )
    trainer.train(config, train_path, work / "canary-out", eval_path=questions)
    records = json.loads((work / "canary-out" / "influence.json").read_text())["records"]
    contributors = [str(r["contributor"]) for r in records]
    asked = [j for j, o in enumerate(owners) if o == "canary"]
    for method, s in np.load(work / "canary-out" / "influence.npz").items():
        top = synthetic.question_accuracy(s[:, asked], contributors, ["canary"] * len(asked))["top1"]
        result["methods"][method]["canary_top1"] = top
    # What retraining says of the copied questions: their loss rise without the canary, and without the task's
    # author (who taught the realm, the attribute and the answer form, but none of these facts).
    rises = {"canary": [], tasks[0].contributor: []}
    for train_seed in range(train_seeds):
        plain = setup.config(model_dir, train_seed, [], len(lines) + canary_records)
        trainer.train(plain, train_path, work / "canary-base", eval_path=questions)
        full_loss = per_question_loss(plain, work / "canary-base" / "adapter", questions)[asked]
        for name, rise in rises.items():
            trainer.train(plain, without(train_path, name, work / "subset.jsonl"), work / "loo", eval_path=questions)
            rise.append(
                float((per_question_loss(plain, work / "loo" / "adapter", questions)[asked] - full_loss).mean())
            )
    result["canary_loo"], result["author_loo"] = (float(np.mean(r)) for r in rises.values())
    return result


def cost_on(model_dir: str, method: str, epochs: float, k: int, methods: list[str]) -> None:
    """Attribution cost on a real base model (e.g. the bundled SmolLM2 under QLoRA): one run, ``methods``."""
    with tempfile.TemporaryDirectory() as tmp:
        tasks = synthetic.make_tasks(k, 12, seed=0)
        train_path, questions, owners = synthetic.write_datanet(tasks, Path(tmp) / "data")
        config = Setup(epochs).config(Path(model_dir), 0, methods, 0)
        config.method, config.learning_rate, config.max_seq_length = method, 2e-4, 128
        started = time.monotonic()
        metrics = trainer.train(config, train_path, Path(tmp) / "out", eval_path=questions)
        total_s = time.monotonic() - started
        records = json.loads((Path(tmp) / "out" / "influence.json").read_text())["records"]
        contributors = [str(r["contributor"]) for r in records]
        summary = metrics["influence"]
        print(
            f"{Path(model_dir).name} {method.upper()}, {len(records)} records, {epochs:g} epoch(s): training "
            f"{total_s - summary['seconds']:.1f} s, attribution {summary['seconds']:.1f} s "
            f"({summary['seconds'] / (total_s - summary['seconds']):.1%}), projection "
            f"{summary['parameters']['projection']}, gradients {summary['gradient_bytes'] / 2**20:.1f} MiB, "
            f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
        )
        for method_name, s in np.load(Path(tmp) / "out" / "influence.npz").items():
            accuracy = synthetic.question_accuracy(s, contributors, owners)
            print(f"  {method_name:8s} top-1 {accuracy['top1']:.3f} AUC {accuracy['auc']:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=4, help="contributors, one invented task each")
    parser.add_argument("--seeds", type=int, default=3, help="data seeds (tasks, model, split)")
    parser.add_argument("--train-seeds", type=int, default=6, help="training seeds for the LOO ground truth")
    parser.add_argument("--canary-records", type=int, default=4, help="records of the canary (a task has 12)")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--bundled", metavar="MODEL_DIR", help="train this base model with the standard preset")
    parser.add_argument("--facts", type=int, default=12, help="facts a task teaches")
    parser.add_argument("--cost-on", metavar="MODEL_DIR", help="only measure the cost on this base model")
    parser.add_argument("--method", default="qlora", help="with --cost-on: qlora or lora")
    parser.add_argument("--methods", default=",".join(influence.METHODS), help="with --cost-on: influence methods")
    args = parser.parse_args()
    if args.cost_on:
        cost_on(args.cost_on, args.method, args.epochs, args.k, args.methods.split(","))
        return 0

    setup = Setup(args.epochs, args.bundled, args.facts)
    with tempfile.TemporaryDirectory() as tmp:  # warm-up: lazy imports and first-call costs are not timed
        run_seed(2, 99, 1, Setup(0.5), Path(tmp), 2)
    results = []
    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory() as tmp:
            result = run_seed(args.k, seed, args.train_seeds, setup, Path(tmp), args.canary_records)
        results.append(result)
        print(
            f"seed {seed}: train {result['train_s']:.1f} s, attribution {result['attribution_s']:.2f} s; LOO loss "
            f"change |mean| {result['truth_mean_abs']:.4f}, seed-to-seed std {result['truth_noise']:.4f}; one "
            f"seed's retraining against the others': pairs {result.get('retrain_pairs', np.nan):+.3f} "
            f"contributors {result.get('retrain_contributors', np.nan):+.3f}; copied questions' loss rise without "
            f"the canary {result['canary_loo']:+.3f}, without their task's author {result['author_loo']:+.3f}",
            flush=True,
        )
        for method, m in result["methods"].items():
            print(
                f"  {method:8s} top-1 {m['top1']:.3f}  AUC {m['auc']:.3f}  Spearman vs LOO: pairs "
                f"{m['spearman_pairs']:+.3f} contributors {m['spearman_contributors']:+.3f} shares (sum) "
                f"{m['spearman_sum']:+.3f} shares (question_shares) {m['spearman_question_shares']:+.3f}  canary "
                f"top-1 {m['canary_top1']:.3f}",
                flush=True,
            )

    print(
        f"\nK={args.k} contributors, {args.seeds} data seeds x {args.train_seeds} training seeds, "
        + (
            f"{Path(args.bundled).name}, standard preset (LoRA)"
            if args.bundled
            else f"tiny Llama (hidden 128), LoRA r=8, {args.epochs:g} epochs"
        )
        + f", {setup.facts} facts a task"
    )
    print(
        f"{'method':10s}{'top-1':>8s}{'AUC':>8s}{'rho pairs':>11s}{'rho contrib':>13s}{'rho sum':>9s}"
        f"{'rho q-shares':>14s}{'canary':>8s}"
    )
    for method in influence.METHODS:
        rows = [r["methods"][method] for r in results]
        mean = {key: np.mean([row[key] for row in rows]) for key in rows[0] if key != "questions"}
        print(
            f"{method:10s}{mean['top1']:8.3f}{mean['auc']:8.3f}{mean['spearman_pairs']:+11.3f}"
            f"{mean['spearman_contributors']:+13.3f}{mean['spearman_sum']:+9.3f}"
            f"{mean['spearman_question_shares']:+14.3f}{mean['canary_top1']:8.3f}"
        )
    if args.train_seeds > 1:
        print(
            f"{'retrain':10s}{'':16s}{np.mean([r['retrain_pairs'] for r in results]):+11.3f}"
            f"{np.mean([r['retrain_contributors'] for r in results]):+13.3f}   (one training seed's LOO against the "
            f"others' mean: the most a method read off one run can expect)"
        )
    first = sum(r["canary_loo"] > r["author_loo"] for r in results)
    print(
        f"canary ({args.canary_records} records against the author's 12): retraining without it hurts the questions it "
        f"copies more than retraining without their task's author in {first} of {len(results)} data seeds"
    )
    train_s = sum(r["train_s"] for r in results)
    attribution_s = sum(r["attribution_s"] for r in results)
    print(
        f"cost: attribution {attribution_s:.2f} s / training {train_s:.1f} s = {attribution_s / train_s:.1%} "
        f"(all methods, same runs); gradients held {max(r['gradient_bytes'] for r in results) / 2**20:.2f} MiB; "
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
