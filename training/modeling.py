"""Loading the base model for training: device, precision, LoRA, QLoRA, DoRA or full, the peft wrapper. No Django."""

from __future__ import annotations

import os
import shutil
from contextlib import nullcontext
from pathlib import Path

from training import distributed

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BF16_MIN_BYTES = 100 * 2**20  # below this, a CPU step spends more on casts than bf16 matmuls save


def device_name() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def stored_bytes(model_dir) -> int:
    return sum(f.stat().st_size for f in Path(model_dir).glob("*.safetensors"))


def fast_bf16(config, device: str) -> bool:
    """Whether to compute in bf16: asked for, or "auto" on a device with native bf16 (a CUDA GPU that
    supports it; a CPU with AVX512-BF16 or AMX, where bf16 matmuls run 2-3x fp32's rate, for a model
    big enough that its matmuls, not the casts around them, take the time)."""
    import torch

    if config.precision != "auto":
        return config.precision == "bf16"
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    stored = stored_bytes(config.base_model_path)
    try:
        native = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):
        native = False
    return bool(native) and stored >= BF16_MIN_BYTES


def pick_method(config, device: str, bf16: bool) -> str:
    """ "auto": LoRA on an unquantised base when its weights fit three times over in free memory (faster
    per step: no 4-bit dequantisation), QLoRA otherwise."""
    if config.method != "auto":
        return config.method
    if distributed.sharded(config):
        return "lora"  # its base is sharded: the devices hold it together
    import torch

    stored = stored_bytes(config.base_model_path)
    weights = stored // 2 if bf16 else stored  # stored as fp32 (bundled) or smaller; bf16 halves fp32
    if device == "cuda":
        free = torch.cuda.mem_get_info()[0]
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return "lora" if weights * 3 < free else "qlora"


def load_model(config, where: str = "device"):
    """The peft model, its tokenizer, and how it computes: {"method", "bf16"}. ``where`` the weights go:
    "device"; "host", in host memory (rank 0 of a run that shards the base, which sends every rank its
    shards: training/distributed.py); "meta", shapes without weights (the other ranks of that run)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    device = device_name()
    bf16 = fast_bf16(config, device)
    method = pick_method(config, device, bf16)
    tokenizer = AutoTokenizer.from_pretrained(config.base_model_path, trust_remote_code=False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    compute_dtype = torch.bfloat16 if bf16 else torch.float32
    kwargs = {"trust_remote_code": False, "use_safetensors": True, "dtype": compute_dtype}
    if method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
        )
        kwargs["device_map"] = {"": torch.cuda.current_device()} if device == "cuda" else {"": "cpu"}
    if where == "meta":
        from transformers import AutoConfig

        with torch.device("meta"):
            settings = AutoConfig.from_pretrained(config.base_model_path, trust_remote_code=False)
            model = AutoModelForCausalLM.from_config(settings, dtype=compute_dtype, trust_remote_code=False)
    else:
        model = AutoModelForCausalLM.from_pretrained(config.base_model_path, **kwargs)
    if method == "qlora" and device == "cpu":
        keep_trainable_4bit_layout(model)
    if method != "qlora" and where == "device":
        model.to(device)
    model.config.use_cache = False
    if method == "full":
        from training.full import FullModel

        return FullModel(model.float()), tokenizer, {"method": method, "bf16": bf16}
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        task_type="CAUSAL_LM",
        use_dora=method == "dora",
    )
    model = get_peft_model(model, lora)
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()  # adapters train in fp32 whatever the base dtype
    return model, tokenizer, {"method": method, "bf16": bf16}


def keep_trainable_4bit_layout(model) -> None:
    """bitsandbytes repacks a 4-bit layer's weights for its CPU inference kernel the first time the layer
    runs in eval mode without gradients, and never packs them back: training after a held-out check
    would then go through a kernel without a backward (its autograd warning says so). Keep the layout
    training needs."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def autocast(device: str, bf16: bool):
    import torch

    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16)


def compiles(config, device: str, method: str) -> bool:
    """Whether the training steps run compiled decoder layers. "auto": a supervised LoRA run on a CPU, for a
    model big enough that a step's time is worth a first compile of 20 to 35 s (about 6 s once inductor's
    cache holds the layer), where a C++ compiler is at hand: a step of one of the bundled model's short
    records takes about 0.2 s compiled against 0.35 s eager. Not QLoRA or DoRA (bitsandbytes' and DoRA's layers break the graph), and
    not on a GPU, where it has not been measured. Never where tracincp is gathered: its hooks on the LoRA layers
    must run in every training step, which compiled layers would skip."""
    if "tracincp" in config.influence_methods:
        return False
    if config.compile_layers != "auto":
        return config.compile_layers == "on"
    return (
        device == "cpu"
        and config.objective == "sft"
        and method == "lora"
        and stored_bytes(config.base_model_path) >= BF16_MIN_BYTES
        and shutil.which(os.environ.get("CXX", "g++")) is not None
    )


def compile_layers(model) -> None:
    """Regional compilation (PyTorch's recipe for a stack of identical blocks): every decoder layer is compiled
    on its own and they share one graph, so the first compile costs one layer's, not the model's. Shapes are
    dynamic (records of any length). Attention runs as plain matmuls and softmax, which inductor fuses: a
    step of one short record is 14% faster than with SDPA's kernels. The switch stays for the rest of the
    run (evaluation and attribution too)."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    lm.set_attn_implementation("eager")
    for layer in lm.get_decoder().layers:
        layer.compile(dynamic=True)


def eager(compute: dict):
    """A context that runs compiled layers eagerly: evaluation, attribution and held-out checks run without
    gradients or with other hooks, each of which would otherwise cost a compile of its own."""
    import torch

    return torch.compiler.set_stance("force_eager") if compute.get("compiled") else nullcontext()
