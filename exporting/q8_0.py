"""GGUF q8_0 blocks chosen to keep the model's answers close, not only each weight. No Django.

The q8_0 format (llama.cpp's ``block_q8_0``) stores 32 weights as one f16 scale ``d`` and 32 integers in
-127..127; it fixes how a block is stored, not how ``d`` and the integers are chosen. llama.cpp's
converter takes ``d = max|w| / 127`` and rounds each weight to the nearest step. Two better choices,
each still plain q8_0 that any GGUF reader dequantizes as ``d * q``:

- **Scale search**: each block's ``d`` is the f16 value among ``max|w| / 127 * f``, f in 0.85..1.3,
  with the smallest squared error. It matters most when the weights already lie on a coarser grid
  (the bundled SmolLM2 comes from a Q4_1 GGUF: the right ``d`` puts most of its 16 levels on q8_0 steps).
- **GPTQ** (Frantar et al., 2022, arXiv:2210.17323): the weights of a linear layer are rounded one
  input column at a time, and each column's rounding error is pushed onto the columns not yet rounded,
  weighted by the inverse of ``H = X^T X`` of the layer's inputs ``X``: the layer's outputs, not its
  weights, stay close. ``X`` comes from text the merged model writes itself from a fixed set of
  openings (``calibration_inputs``): no data from outside the model, and the adapter's own leanings
  are in it. GPTQ libraries (auto-gptq, gptqmodel) round to their own grids (2 * max / 255 steps,
  zero points), which q8_0 cannot store without rounding again, hence the forty lines below.
"""

from __future__ import annotations

import numpy as np
import torch

BLOCK = 32
LIMIT = 127
GPTQ_BUDGET = 2 * 2**30  # bytes of X^T X matrices; a larger model gets the scale search alone

OPENINGS = [
    "Tell me about the history of",
    "How do I",
    "Explain in simple words why",
    "Write a short note about",
    "What happens when",
    "Describe",
    "Give me three tips for",
    "Compare",
]
TOPICS = ["cooking", "a city", "the weather", "money", "a machine", "your work", "an animal", "health"]


def block_scales(weights: torch.Tensor, low: float = 0.85, high: float = 1.3, steps: int = 32) -> torch.Tensor:
    """(rows, blocks) f16-exact scales, each its block's least-squared-error one among max/127 times 1 and
    ``steps`` factors from ``low`` to ``high`` (``steps=0``: max/127, llama.cpp's scale)."""
    rows, columns = weights.shape
    if rows > 2048:  # in slices: the candidates' temporaries stay in cache
        return torch.cat([block_scales(part, low, high, steps) for part in weights.split(2048)])
    blocks = weights.float().reshape(rows, columns // BLOCK, BLOCK)
    top = blocks.abs().amax(-1) / LIMIT
    best = error = None
    for factor in torch.cat([torch.ones(1), torch.linspace(low, high, steps)]):  # 1: never worse than max/127
        scale = (top * factor).half().float().clamp_min(torch.finfo(torch.float16).tiny)
        rounded = (blocks / scale[..., None]).round().clamp(-LIMIT, LIMIT) * scale[..., None]
        candidate = (rounded - blocks).square().sum(-1)
        if best is None:
            best, error = scale, candidate
        else:
            better = candidate < error
            best, error = torch.where(better, scale, best), torch.minimum(candidate, error)
    return best


def gptq(weights: torch.Tensor, hessian: torch.Tensor, scales: torch.Tensor, damp: float = 0.01) -> torch.Tensor:
    """The integers (int8, weights' shape) for ``weights`` on the grid ``scales`` (from ``block_scales``),
    rounded column by column with the error pushed onto later columns through ``hessian`` (X^T X). The
    columns whose inputs are largest go first (GPTQ's "act order"; the scales stay the blocks' own, so
    the file is the same q8_0)."""
    columns = weights.shape[1]
    order = torch.argsort(hessian.diagonal(), descending=True)
    weights = weights.float()[:, order].clone()
    step = scales.repeat_interleave(BLOCK, dim=1)[:, order]
    hessian = hessian.double()[order][:, order].clone()
    dead = hessian.diagonal() == 0
    hessian[dead, dead] = 1
    weights[:, dead] = 0
    hessian += damp * hessian.diagonal().mean() * torch.eye(columns, dtype=hessian.dtype)
    inverse = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hessian)), upper=True).float()
    integers = torch.empty(weights.shape, dtype=torch.int8)
    for start in range(0, columns, BLOCK):
        end = min(start + BLOCK, columns)
        block, errors = weights[:, start:end].clone(), torch.empty(weights.shape[0], end - start)
        local = inverse[start:end, start:end]
        for j in range(end - start):
            q = (block[:, j] / step[:, start + j]).round().clamp(-LIMIT, LIMIT)
            integers[:, start + j] = q.to(torch.int8)
            errors[:, j] = (block[:, j] - q * step[:, start + j]) / local[j, j]
            block[:, j:] -= errors[:, j, None] * local[j, j:]
        weights[:, end:] -= errors @ inverse[start:end, end:]
    return integers[:, torch.argsort(order)]


def rounded(weights: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Round to the nearest step of ``scales``: the integers without GPTQ."""
    rows, columns = weights.shape
    steps = weights.float().reshape(rows, columns // BLOCK, BLOCK) / scales[..., None]
    return steps.round().clamp(-LIMIT, LIMIT).to(torch.int8).reshape(rows, columns)


def pack(scales, integers) -> np.ndarray:
    """GGML's q8_0 bytes: per row, each block's f16 scale then its 32 int8s (what gguf.quants writes).
    Takes arrays or tensors: (rows, blocks) scales, (rows, columns) integers."""
    rows = integers.shape[0]
    d = np.ascontiguousarray(np.asarray(scales), dtype=np.float16).view(np.uint8).reshape(rows, -1, 2)
    q = np.ascontiguousarray(np.asarray(integers), dtype=np.int8).view(np.uint8).reshape(rows, -1, BLOCK)
    return np.concatenate([d, q], axis=-1).reshape(rows, -1)


def calibration_inputs(model, tokenizer, new_tokens: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of what the model answers, sampled, to OPENINGS x TOPICS as chat
    prompts; the mask ends each row at its first end-of-turn token."""
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": f"{opening} {topic}."}], tokenize=False, add_generation_prompt=True
        )
        for opening in OPENINGS
        for topic in TOPICS
    ]
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(seed)
    with torch.no_grad():
        ids = model.generate(
            **batch,
            max_new_tokens=new_tokens,
            do_sample=True,
            top_p=0.95,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    answers = ids[:, batch["input_ids"].shape[1] :]
    ended = (answers == tokenizer.eos_token_id).long()
    return ids, torch.cat([batch["attention_mask"], (ended.cumsum(1) - ended == 0).long()], 1)


def hessians(model, ids: torch.Tensor, mask: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """X^T X of the inputs of each linear layer in ``names`` over the unpadded tokens. Layers called one
    after another on the same input (query, key and value; gate and up) share one matrix."""
    found: dict[str, torch.Tensor] = {}
    last: list = [None, None]
    keep = mask.reshape(-1).bool()

    def hook(name):
        def collect(module, args, output):
            if args[0] is not last[0]:
                x = args[0].reshape(-1, args[0].shape[-1])[keep].float()
                last[:] = [args[0], x.T @ x]
            found[name] = last[1]

        return collect

    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_hook(hook(name)) for name in names]
    try:
        with torch.no_grad():
            model.get_decoder()(input_ids=ids, attention_mask=mask)  # the layers; no logits
    finally:
        for handle in handles:
            handle.remove()
    return found


def hessian_bytes(config) -> int:
    """Memory for the shared X^T X matrices of a Llama-shaped model, in float32."""
    hidden, inner = config.hidden_size, config.intermediate_size
    return config.num_hidden_layers * (3 * hidden**2 + inner**2) * 4


ROUNDINGS = ("gptq", "scale search", "nearest")


class Quantizer:
    """Scales and integers of each matrix of a model directory. ``rounding``: "gptq" (the linear layers,
    when their inputs' matrices fit in ``budget`` bytes; the scale search for the rest), "scale search",
    or "nearest" (llama.cpp's converter: max/127, each weight to its nearest step). ``method`` says
    which was used."""

    def __init__(self, model_dir, rounding: str = "gptq", budget: int = GPTQ_BUDGET):
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {ROUNDINGS}")
        self.hessians: dict[str, torch.Tensor] = {}
        if rounding == "gptq" and hessian_bytes(AutoConfig.from_pretrained(model_dir)) <= budget:
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
            linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"]
            ids, mask = calibration_inputs(model, AutoTokenizer.from_pretrained(model_dir))
            self.hessians = {f"{n}.weight": h for n, h in hessians(model, ids, mask, linears).items()}
        self.method = "gptq" if self.hessians else "scale search" if rounding != "nearest" else "nearest"

    def __call__(self, name: str, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scales = block_scales(weights, steps=0 if self.method == "nearest" else 32)
        hessian = self.hessians.pop(name, None)
        return scales, gptq(weights, hessian, scales) if hessian is not None else rounded(weights, scales)
