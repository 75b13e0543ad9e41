"""Write a merged Llama-architecture model directory as a GGUF file (f16 or q8_0) with the `gguf` package.
No Django.

What llama.cpp's own converter (convert_hf_to_gguf.py) does for these models, for the models the catalogue
holds (Llama architecture, byte-level BPE tokenizer; the bundled SmolLM2 and the tests' tiny Llama):
tensor names from gguf's Llama name map, the query and key projections permuted from Hugging Face's
rotary layout to llama.cpp's interleaved one (transformers' GGUF loader permutes them back), 1-D tensors
(norms) in f32, matrices in f16 or q8_0 (a matrix whose rows do not split into 32-value blocks stays
f16; the q8_0 blocks are chosen by exporting/q8_0.py: GPTQ, not llama.cpp's nearest step), no output
matrix when it is tied to the embeddings. The tokenizer goes into the metadata: tokens, token types,
merges, special token ids, whether BOS is added, and the chat template.

Tensors are converted and written one at a time, so memory holds one tensor, not the model (q8_0 with
GPTQ first loads the model once, to see each layer's inputs).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from exporting import q8_0

QUANTS = ("f16", "q8_0")


class UnsupportedModel(ValueError):
    """The model's architecture or tokenizer is not one this writer knows how to convert."""


def _gguf():
    import gguf

    return gguf


def _tensor_type(quant: str, shape: tuple[int, ...]):
    gguf = _gguf()
    if len(shape) == 1:
        return gguf.GGMLQuantizationType.F32
    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0]
    if quant == "q8_0" and shape[-1] % block == 0:
        return gguf.GGMLQuantizationType.Q8_0
    return gguf.GGMLQuantizationType.F16


def _nbytes(kind, shape: tuple[int, ...]) -> int:
    gguf = _gguf()
    block, size = gguf.GGML_QUANT_SIZES[kind]
    count = int(np.prod(shape))
    return count // block * size


def permute_rotary(weights: np.ndarray, heads: int) -> np.ndarray:
    """Hugging Face's rotate-half layout of a query/key projection to llama.cpp's interleaved pairs."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _load_config(model_dir: Path) -> dict:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "llama":
        raise UnsupportedModel(f"GGUF export knows Llama-architecture models; this one is {config.get('model_type')}.")
    rope = config.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default" or config.get("rope_scaling"):
        raise UnsupportedModel("GGUF export does not carry rope scaling yet; this model uses it.")
    return config


def _tensor_plan(model_dir: Path, config: dict) -> list[tuple[str, str, tuple[int, ...], str]]:
    """(file, safetensors name, shape, GGUF name) of every tensor to write, in file order."""
    from safetensors import safe_open

    gguf = _gguf()
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    plan = []
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(file, framework="pt") as weights:
            for name in weights.keys():
                if name == "lm_head.weight" and config.get("tie_word_embeddings"):
                    continue  # llama.cpp reads the tied output from the embeddings
                target = names.get_name(name, try_suffixes=(".weight", ".bias"))
                if target is None:
                    raise UnsupportedModel(f"No GGUF name for tensor {name}.")
                plan.append((file.name, name, tuple(weights.get_slice(name).get_shape()), target))
    return plan


def _converted(name: str, tensor, config: dict, kind, quantizer) -> np.ndarray:
    gguf = _gguf()
    heads = None
    if name.endswith("self_attn.q_proj.weight"):
        heads = config["num_attention_heads"]
    elif name.endswith("self_attn.k_proj.weight"):
        heads = config.get("num_key_value_heads") or config["num_attention_heads"]
    if kind == gguf.GGMLQuantizationType.Q8_0:
        scales, integers = (part.numpy() for part in quantizer(name, tensor.float()))
        if heads:  # rows move with their scales
            scales, integers = permute_rotary(scales, heads), permute_rotary(integers, heads)
        return q8_0.pack(scales, integers)
    tensor = tensor.float().numpy()
    if heads:
        tensor = permute_rotary(tensor, heads)
    return gguf.quants.quantize(np.ascontiguousarray(tensor), kind)


def byte_level_vocab(model_dir: Path, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens by id and their GGUF types: special added tokens are control tokens, other added tokens
    user-defined; ids the tokenizer leaves unused up to the model's vocabulary size are padding."""
    gguf = _gguf()
    spec = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    pre, model = spec.get("pre_tokenizer") or {}, spec.get("model") or {}
    if model.get("type") != "BPE" or pre.get("type") != "ByteLevel" or not pre.get("use_regex", True):
        raise UnsupportedModel("GGUF export knows byte-level BPE tokenizers with the GPT-2 split only.")
    by_id = {index: token for token, index in model["vocab"].items()}
    kinds = {}
    for added in spec.get("added_tokens", []):
        by_id[added["id"]] = added["content"]
        kinds[added["id"]] = gguf.TokenType.CONTROL if added["special"] else gguf.TokenType.USER_DEFINED
    size = max(vocab_size, max(by_id) + 1)
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(size)]
    types = [kinds.get(i, gguf.TokenType.NORMAL if i in by_id else gguf.TokenType.UNUSED) for i in range(size)]
    return tokens, [int(t) for t in types]


def _adds_bos(model_dir: Path) -> bool:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    ids = tokenizer("a")["input_ids"]
    return tokenizer.bos_token_id is not None and bool(ids) and ids[0] == tokenizer.bos_token_id


def _write_metadata(writer, model_dir: Path, config: dict, *, name: str, quant: str) -> None:
    gguf = _gguf()
    heads = config["num_attention_heads"]
    writer.add_type("model")
    writer.add_name(name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_rope_freq_base(float((config.get("rope_parameters") or {}).get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_dimension_count(config.get("head_dim") or config["hidden_size"] // heads)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quant == "q8_0" else gguf.LlamaFileType.MOSTLY_F16)
    tokens, types = byte_level_vocab(model_dir, config["vocab_size"])
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens))
    if not special.chat_template:
        raise UnsupportedModel("The model has no chat template to put in the GGUF metadata.")
    special.add_to_gguf(writer, quiet=True)
    writer.add_add_bos_token(_adds_bos(model_dir))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def write_gguf(
    model_dir: Path | str,
    dest: Path | str,
    *,
    quant: str,
    name: str,
    progress: Callable[[int, int], None] | None = None,
    rounding: str = "gptq",
) -> str:
    """Write ``model_dir`` (a merged Hugging Face Llama directory) to the GGUF file ``dest``;
    ``progress(tensors_done, tensors_total)`` after each tensor; ``rounding``: how q8_0 blocks are chosen
    (``exporting.q8_0.ROUNDINGS``). Returns the rounding used ("" for f16)."""
    from safetensors import safe_open

    if quant not in QUANTS:
        raise ValueError(f"quant must be one of {QUANTS}")
    gguf = _gguf()
    model_dir, dest = Path(model_dir), Path(dest)
    config = _load_config(model_dir)
    plan = _tensor_plan(model_dir, config)
    writer = gguf.GGUFWriter(dest, "llama")
    try:
        _write_metadata(writer, model_dir, config, name=name, quant=quant)
        kinds = [_tensor_type(quant, shape) for _, _, shape, _ in plan]
        quantizer = q8_0.Quantizer(model_dir, rounding) if gguf.GGMLQuantizationType.Q8_0 in kinds else None
        for (_, _, shape, target), kind in zip(plan, kinds, strict=True):
            writer.add_tensor_info(target, shape, np.dtype(np.float32), _nbytes(kind, shape), raw_dtype=kind)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        opened = {}
        for done, ((file, source, _, _), kind) in enumerate(zip(plan, kinds, strict=True), 1):
            if file not in opened:
                opened = {file: safe_open(model_dir / file, framework="pt")}
            writer.write_tensor_data(_converted(source, opened[file].get_tensor(source), config, kind, quantizer))
            if progress:
                progress(done, len(plan))
    finally:
        writer.close()
    return quantizer.method if quantizer else ""
