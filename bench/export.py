"""Benchmark: export an adapter of the bundled base model to merged safetensors, GGUF f16 and GGUF q8_0 (signed
zips, as the export task builds them), then check what the exports answer. Pure code (no Django).

    .venv/bin/python bench/export.py                # time the export, then check the answers
    .venv/bin/python bench/export.py --train        # the same for an adapter trained first (about 20 min)
    .venv/bin/python bench/export.py --no-checks    # the time alone (on a quiet machine)

The adapter: by default a stand-in for a trained one (LoRA r=8 on every linear layer) with random non-zero
weights, so that it changes the base model's answers: exporting costs the same. Its answers sit on
near-ties (top two tokens within about 0.01 nats) more often than a trained model's, so they flip under
smaller changes. ``--train`` exports what a job with the default preset ("standard") learns from
bench/learning.py's Datanet of invented facts; ``--adapter DIR`` any adapter of the base model.
The checks: the merged model answers the same greedy tokens as base + adapter for 20 chat prompts; each
GGUF, loaded back with transformers' GGUF loader, answers the same as the merged model and its chat
template renders the same prompt text; q8_0 files with blocks chosen the other ways (exporting/q8_0.py:
the scale search alone, llama.cpp's nearest step) answer as the merged model for how many prompts.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from attribution import manifest as manifest_lib  # noqa: E402
from exporting.build import Signer, Source, build_exports  # noqa: E402
from exporting.gguf_file import write_gguf  # noqa: E402
from training.model_import import weights_sha256  # noqa: E402

BUNDLED = ROOT / "var" / "models" / "smollm2-135m-instruct"


def stand_in_adapter(base_dir: Path, dest: Path, scale: float, seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)  # lora_A's initialisation too
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, scale)
    model.save_pretrained(dest)
    return dest


MORE_PROMPTS = (
    [f"What is a {w}?" for w in "cat tree river bank piano cloud engine bridge lamp violin".split()]
    + [
        f"Write one sentence about {w}."
        for w in "winter|the sea|coffee|bikes|love|hills|rain|books|music|bread".split("|")
    ]
    + [f"Why is {w} important?" for w in "sleep water exercise trust education".split()]
    + ["List three animals.", "What is 7 times 8?", "Tell me a joke.", "What is gravity?", "Explain photosynthesis."]
)


def next_token_logprobs(model, tokenizer, prompts: list[str], answers: list[list[int]]) -> list:
    """At each position of each given answer (fed in, teacher-forced), the model's next-token log-probabilities."""
    import torch

    from exporting.compare import chat_text

    out = []
    with torch.no_grad():
        for prompt, answer in zip(prompts, answers, strict=True):
            ids = tokenizer(chat_text(tokenizer, prompt), return_tensors="pt", add_special_tokens=False)["input_ids"]
            logits = model(input_ids=torch.cat([ids, torch.tensor([answer])], 1)).logits[0, ids.shape[1] - 1 : -1]
            out.append(logits.log_softmax(-1))
    return out


def drift(got: list, reference: list) -> str:
    positions = sum(r.shape[0] for r in reference)
    flips = sum(int((g.argmax(-1) != r.argmax(-1)).sum()) for g, r in zip(got, reference, strict=True))
    kl = sum(float((r.exp() * (r - g)).sum()) for g, r in zip(got, reference, strict=True)) / positions
    return f"top token differs at {flips} of {positions} positions, mean KL from the merged model {kl:.1e}"


def check(base_dir: Path, adapter_dir: Path, work: Path, zips: dict) -> None:
    """Greedy agreement over the 20 check prompts; over those and MORE_PROMPTS, how far each GGUF's
    next-token distribution drifts from the merged model's on the merged model's own answers."""
    import zipfile

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from exporting.compare import PROMPTS, greedy_tokens, same_answers, same_prompt_texts

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    base_answers = greedy_tokens(base, tokenizer)
    tuned = greedy_tokens(PeftModel.from_pretrained(base, adapter_dir).eval(), tokenizer)
    print(f"the adapter changes {len(PROMPTS) - same_answers(base_answers, tuned)} of {len(PROMPTS)} base answers")
    merged_dir = work / "check-merged"
    zipfile.ZipFile(zips["merged"]).extractall(merged_dir)
    merged_model = AutoModelForCausalLM.from_pretrained(merged_dir)
    merged = greedy_tokens(merged_model, tokenizer)
    print(f"merged == base + adapter: {same_answers(merged, tuned)} of {len(PROMPTS)} prompts")
    prompts = PROMPTS + MORE_PROMPTS
    answers_all = merged + greedy_tokens(merged_model, tokenizer, MORE_PROMPTS)
    reference = next_token_logprobs(merged_model, tokenizer, prompts, answers_all)
    ggufs = {}
    for fmt in ("gguf-f16", "gguf-q8_0"):
        directory = work / f"check-{fmt}"
        zipfile.ZipFile(zips[fmt]).extractall(directory)
        name = next(p.name for p in directory.glob("*.gguf"))
        gguf_tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
        ggufs[fmt] = directory / name
        answers = greedy_tokens(AutoModelForCausalLM.from_pretrained(directory, gguf_file=name), gguf_tokenizer)
        print(
            f"{fmt} == merged: {same_answers(answers, merged)} of {len(PROMPTS)} prompts; chat template renders "
            f"the same prompt text for {same_prompt_texts(tokenizer, gguf_tokenizer)} of {len(PROMPTS)}"
        )
    for rounding in ("scale search", "nearest"):  # the other ways to choose q8_0 blocks, for comparison
        ggufs[f"gguf-q8_0 rounded by {rounding}"] = path = work / f"check-{rounding.replace(' ', '-')}.gguf"
        write_gguf(merged_dir, path, quant="q8_0", name="bench", rounding=rounding)
    for label, path in ggufs.items():
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
        if "rounded by" in label:
            answers = greedy_tokens(model, tokenizer)
            print(f"{label} == merged: {same_answers(answers, merged)} of {len(PROMPTS)} prompts")
        got = next_token_logprobs(model, tokenizer, prompts, answers_all)
        print(f"{label}, {len(prompts)} prompts: {drift(got, reference)}")


def trained_adapter(base_dir: Path, work: Path, seed: int) -> Path:
    """Train the default preset on bench/learning.py's Datanet (generated from ``seed``), as a job would; the
    adapter's directory."""
    from learning import write_data

    from training import presets, trainer

    settings = presets.resolve(presets.DEFAULT, "auto", {"influence_methods": []}, records=240)
    config = trainer.TrainConfig.from_dict({**settings, "base_model_path": str(base_dir)})
    data = write_data(work, kinds=4, facts=60, asked=10, eval_fraction=config.eval_fraction, seed=seed)["data"]
    started = time.perf_counter()
    metrics = trainer.train(config, data, work / "run")
    print(f"trained the {presets.DEFAULT} preset: {metrics['steps']} steps in {time.perf_counter() - started:.0f} s")
    return work / "run" / "adapter"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=BUNDLED)
    parser.add_argument("--scale", type=float, default=0.01, help="spread of the stand-in adapter's B weights")
    parser.add_argument(
        "--seed", type=int, default=0, help="the stand-in adapter's random seed (--train: the Datanet's)"
    )
    parser.add_argument("--train", action="store_true", help="export an adapter trained first, not the stand-in")
    parser.add_argument("--adapter", type=Path, help="export this adapter of the base model, not the stand-in")
    parser.add_argument("--no-checks", action="store_true", help="only time the export")
    args = parser.parse_args()
    if not (args.base / "config.json").exists():
        sys.exit(f"{args.base} is missing: run `manage.py import_base_model --bundled` first.")
    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.adapter:
            adapter_dir = args.adapter
        elif args.train:
            adapter_dir = trained_adapter(args.base, tmp, args.seed)
        else:
            adapter_dir = stand_in_adapter(args.base, tmp / "adapter", args.scale, args.seed)
        manifest = {
            "adapter": {"slug": "bench", "name": "Bench", "version": 1},
            "base_model": {
                "name": args.base.name,
                "weights_sha256": weights_sha256(args.base),
                "license": "apache-2.0",
            },
        }
        source = Source(args.base, adapter_dir, manifest, manifest_lib.sign(manifest, key))
        work = tmp / "work"
        work.mkdir()
        start = time.perf_counter()
        zips = build_exports(source, Signer(key, pem), work)
        seconds = time.perf_counter() - start
        sizes = ", ".join(f"{fmt} {path.stat().st_size / 2**20:.0f} MiB" for fmt, path in zips.items())
        print(f"export of {args.base.name}'s adapter to merged + GGUF f16 + q8_0: {seconds:.1f} s ({sizes})")
        if not args.no_checks:
            check(args.base, adapter_dir, tmp, zips)


if __name__ == "__main__":
    main()
