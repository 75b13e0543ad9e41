"""Benchmark: ModelFactory's trainer beside LLaMA-Factory, the peer a user would pick, on the same model,
data and settings (QLoRA r=8, alpha 16, all linear layers, no dropout, batch 4, sequences up to 256,
lr 2e-4 cosine, 1 epoch of the 240 invented-fact records of bench/learning.py), runs alternated.
Prints samples/s over the training loop and each process's peak RSS.

LLaMA-Factory lives in a scratch virtualenv outside the project (never a dependency):

    python3.11 -m venv /tmp/lf && /tmp/lf/bin/pip install torch==2.13.0 \\
        && /tmp/lf/bin/pip install -c <(echo torch==2.13.0) llamafactory==0.9.5 bitsandbytes==0.50.2 \\
        && /tmp/lf/bin/pip uninstall -y torchvision torchaudio   # built for another torch; text needs neither
    .venv/bin/python bench/llamafactory.py --lf /tmp/lf/bin/llamafactory-cli --rounds 2

Our side runs `python -m training.trainer` in fp32 (as the peer's settings say) and with the
trainer's automatic precision (bf16 on a CPU with AVX512-BF16).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SETTINGS = {
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.0,
    "batch_size": 4,
    "max_seq_length": 256,
    "learning_rate": 2e-4,
    "lr_scheduler": "cosine",
    "epochs": 1.0,
    "warmup_ratio": 0.0,
}


def measured(command: list[str], env: dict | None = None) -> tuple[str, float]:
    """Run to the end; its output and its peak RSS in MB (the process and the children it waited for)."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"{command[0]} failed:\n{output[-3000:]}")
    return output, usage.ru_maxrss / 1024


def ours(model: str, data: Path, work: Path, precision: str) -> dict:
    out = work / f"ours-{precision}"
    config = {
        **SETTINGS,
        "base_model_path": model,
        "method": "qlora",
        "precision": precision,
        "eval_fraction": 0,
        "task_eval_examples": 0,
        "eval_prompts": 0,
        "influence_methods": [],
        "checkpoint_every": 10**6,
        "data_path": str(data),
        "output_dir": str(out),
    }
    (work / "ours.json").write_text(json.dumps(config))
    _, rss = measured([sys.executable, "-m", "training.trainer", str(work / "ours.json")])
    metrics = json.loads((out / "metrics.json").read_text())
    samples = metrics["train_examples"] * SETTINGS["epochs"]
    return {
        "side": f"ModelFactory ({precision})",
        "samples_per_s": samples / metrics["train_seconds"],
        "peak_rss_mb": rss,
    }


def _torchaudio_stub(work: Path) -> Path:
    """LLaMA-Factory imports torchaudio; an empty package stands in for it (unused for text)."""
    (work / "stub" / "torchaudio").mkdir(parents=True, exist_ok=True)
    (work / "stub" / "torchaudio" / "__init__.py").touch()
    return work / "stub"


def llamafactory(cli: str, model: str, data: Path, work: Path) -> dict:
    records = [json.loads(line)["content"] for line in data.read_text().splitlines()]
    (work / "lf-data").mkdir(exist_ok=True)
    (work / "lf-data" / "facts.json").write_text(json.dumps([{"input": "", **r} for r in records]))
    (work / "lf-data" / "dataset_info.json").write_text(json.dumps({"facts": {"file_name": "facts.json"}}))
    config = {
        "model_name_or_path": model,
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_rank": SETTINGS["lora_r"],
        "lora_alpha": SETTINGS["lora_alpha"],
        "lora_dropout": 0.0,
        "lora_target": "all",
        "quantization_bit": 4,
        "quantization_method": "bnb",
        "double_quantization": True,
        "template": "smollm2",
        "dataset": "facts",
        "dataset_dir": str(work / "lf-data"),
        "cutoff_len": SETTINGS["max_seq_length"],
        "per_device_train_batch_size": SETTINGS["batch_size"],
        "gradient_accumulation_steps": 1,
        "learning_rate": SETTINGS["learning_rate"],
        "lr_scheduler_type": "cosine",
        "num_train_epochs": SETTINGS["epochs"],
        "output_dir": str(work / "lf-out"),
        "overwrite_output_dir": True,
        "logging_steps": 1000,
        "save_strategy": "no",
        "report_to": "none",
        "bf16": False,
        "fp16": False,
        "use_cpu": True,
        "preprocessing_num_workers": 1,
        "dataloader_num_workers": 0,
    }
    (work / "lf.yaml").write_text(json.dumps(config))  # JSON is YAML; its .json reader is broken
    output, rss = measured(
        [cli, "train", str(work / "lf.yaml")],
        env={"CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(_torchaudio_stub(work))},
    )
    rate = float(re.findall(r"train_samples_per_second\W+([0-9.]+)", output)[-1])
    return {"side": "LLaMA-Factory 0.9.5", "samples_per_s": rate, "peak_rss_mb": rss}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lf", default="/tmp/lf/bin/llamafactory-cli", help="llamafactory-cli of the scratch venv")
    parser.add_argument("--model", default=str(ROOT / "var/models/smollm2-135m-instruct"))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from testkit import synthetic

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data, _, _ = synthetic.write_datanet(synthetic.make_tasks(4, 60, seed=0), work / "data", questions_per_task=0)
        for _ in range(args.rounds):
            for run in (
                lambda: llamafactory(args.lf, args.model, data, work),
                lambda: ours(args.model, data, work, "fp32"),
                lambda: ours(args.model, data, work, "auto"),
            ):
                rows.append(run())
                print(json.dumps(rows[-1]), flush=True)
    peer = [r["samples_per_s"] for r in rows if r["side"].startswith("LLaMA")]
    print(f"\n{'side':<26} {'samples/s':>10} {'x peer':>7} {'peak RSS MB':>12}")
    for r in rows:
        print(
            f"{r['side']:<26} {r['samples_per_s']:>10.2f} {r['samples_per_s'] / (sum(peer) / len(peer)):>7.2f} "
            f"{r['peak_rss_mb']:>12.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
