"""Build every export of a published adapter into signed zips: merged weights, GGUF f16 and GGUF q8_0 (each with
an Ollama Modelfile). No Django: the task, the benchmark and the tests call it with paths and a key.

Each zip holds its files, the adapter's signed manifest it derives from, and a signed export manifest
(``attribution.exports``) that lists every file's SHA-256.
"""

from __future__ import annotations

import importlib.metadata
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from attribution import exports as export_manifest

from .gguf_file import write_gguf
from .merge import merge_adapter, stored_dtype
from .ollama import modelfile

FORMATS = ("merged", "gguf-f16", "gguf-q8_0")
Progress = Callable[..., None]  # progress(format, done=..., total=...)


@dataclass(frozen=True)
class Source:
    """What an export derives from: the base model's weights, the adapter's files and its signed manifest."""

    base_dir: Path
    adapter_dir: Path
    adapter_manifest: dict
    adapter_signature: bytes

    @property
    def stem(self) -> str:
        adapter = self.adapter_manifest["adapter"]
        return f"{adapter['slug']}-v{adapter['version']}"

    @property
    def title(self) -> str:
        adapter = self.adapter_manifest["adapter"]
        return f"{adapter['name']} v{adapter['version']}"


@dataclass(frozen=True)
class Signer:
    private_key: object
    public_key_pem: bytes
    code_version: str = "unknown"


def tool_versions() -> dict:
    return {name: importlib.metadata.version(name) for name in ("torch", "transformers", "peft", "gguf")}


def check_base(source: Source) -> None:
    """The base directory holds the weights the adapter was trained on (the manifest names their hash)."""
    from training.model_import import weights_sha256

    expected = source.adapter_manifest["base_model"]["weights_sha256"]
    if weights_sha256(source.base_dir) != expected:
        raise ValueError(f"The base model's weights are not those the adapter was trained on (sha256 {expected}).")


def _sign_and_zip(directory: Path, zip_path: Path, source: Source, signer: Signer, export: dict) -> Path:
    files = {p.relative_to(directory).as_posix(): p for p in sorted(directory.rglob("*")) if p.is_file()}
    files.update(export_manifest.write_adapter_manifest(directory, source.adapter_manifest, source.adapter_signature))
    manifest = export_manifest.build_export_manifest(
        export={**export, "tools": tool_versions(), "code_version": signer.code_version},
        adapter_manifest=source.adapter_manifest,
        files=files,
        public_key_pem=signer.public_key_pem,
        created_at=datetime.now(UTC).isoformat(),
    )
    export_manifest.write_signature_files(directory, manifest, signer.private_key, signer.public_key_pem)
    return export_manifest.zip_directory(directory, zip_path)


def _modelfile_text(merged_dir: Path, gguf_name: str, source: Source) -> str:
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(merged_dir, trust_remote_code=False)
    generation = GenerationConfig.from_pretrained(merged_dir)
    return modelfile(
        gguf_name=gguf_name,
        render=lambda messages: tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
        stop_tokens=[tokenizer.eos_token],
        context_length=AutoConfig.from_pretrained(merged_dir).max_position_embeddings,
        greedy=not generation.do_sample,
        title=f"{source.title}, exported by ModelFactory from {source.adapter_manifest['base_model']['name']}",
        license_name=source.adapter_manifest["base_model"].get("license") or "",
    )


def _gguf_export(merged_dir: Path, work: Path, source: Source, signer: Signer, quant: str, progress) -> Path:
    directory = work / f"gguf-{quant}"
    directory.mkdir()
    gguf_name = f"{source.stem}.{quant}.gguf"
    rounding = write_gguf(
        merged_dir,
        directory / gguf_name,
        quant=quant,
        name=source.title,
        progress=lambda done, total: progress(f"gguf-{quant}", done=done, total=total),
    )
    (directory / "Modelfile").write_text(_modelfile_text(merged_dir, gguf_name, source), encoding="utf-8")
    export = {"format": "gguf", "quantisation": quant, "file": gguf_name, "modelfile": "Modelfile"}
    if rounding:
        export["rounding"] = rounding
    return _sign_and_zip(directory, work / f"{source.stem}-gguf-{quant}.zip", source, signer, export)


def build_exports(source: Source, signer: Signer, work: Path, progress: Progress | None = None) -> dict[str, Path]:
    """Write the three export zips under ``work`` (an empty directory); returns format -> zip path."""
    say = progress or (lambda *args, **kwargs: None)
    work = Path(work)
    say("merged", done=0, total=1)
    check_base(source)
    merged_dir = work / "merged"
    merge_adapter(source.base_dir, source.adapter_dir, merged_dir)
    zips = {
        fmt: _gguf_export(merged_dir, work, source, signer, fmt.removeprefix("gguf-"), say)
        for fmt in ("gguf-f16", "gguf-q8_0")
    }
    say("merged", done=1, total=1)
    export = {
        "format": "merged",
        "layout": "Hugging Face safetensors",
        "dtype": stored_dtype(source.base_dir),
        "merge": "peft merge_and_unload on the float32 base",
    }
    zips["merged"] = _sign_and_zip(merged_dir, work / f"{source.stem}-merged.zip", source, signer, export)
    shutil.rmtree(merged_dir)
    return {fmt: zips[fmt] for fmt in FORMATS}
