"""The trainer's settings (TrainConfig), what a run holds between its phases (Run), and how a caller stops
it (Cancelled). No Django."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from attribution.aggregation import AGGREGATIONS
from attribution.aggregation import METHODS as INFLUENCE_METHODS
from training.examples import Example

ProgressFn = Callable[[dict], None]


class Cancelled(Exception):
    """The caller asked the run to stop."""


@dataclass
class TrainConfig:
    base_model_path: str
    # "qlora" (4-bit NF4 base, double quantisation), "lora", or "auto": the faster that fits (see pick_method)
    method: str = "qlora"  # also "dora" (LoRA with weight decomposition) and "full" (every weight trains)
    objective: str = "sft"  # "sft" (supervised), or "dpo" / "orpo" on preference records (training/preference.py)
    beta: float = 0.1  # DPO's and ORPO's beta
    devices: int = 1  # processes (GPUs) the run trains on, under torchrun (training/distributed.py)
    nodes: int = 1  # machines, each with ``devices`` of them (training/launch.py)
    parallel: str = "ddp"  # across devices: "ddp" (a whole model on each) or "fsdp" (the base sharded over them)
    precision: str = "auto"  # "auto": bf16 where the device computes it fast, else fp32; or "bf16", "fp32"
    compile_layers: str = "auto"  # "on", "off", or "auto": where it pays (training/modeling.py, compiles)
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    learning_rate: float = 2e-4
    loraplus_lr_ratio: float = 1.0  # LoRA+: the B matrices learn this many times faster than A; 1: plain LoRA
    lr_scheduler: str = "cosine"  # cosine, linear or constant
    warmup_ratio: float = 0.05
    epochs: float = 1.0
    batch_size: int = 4
    gradient_accumulation: int = 1
    max_seq_length: int = 512
    eval_fraction: float = 0.05  # held out for generalisation (at most max_eval_records); 0: train on all
    max_eval_records: int = 100
    seed: int = 42
    checkpoint_every: int = 50  # steps; and at least 4 times per run, and every checkpoint_every_s seconds
    checkpoint_every_s: float = 300.0
    eval_every: int = 0  # held-out loss every N steps; 0: once an epoch
    early_stopping_patience: int = 0  # stop after N held-out checks without a better loss; 0: never
    max_steps: int = 0  # 0: as many as the epochs need
    eval_prompts: int = 5  # answers shown side by side (base and fine-tune) per evaluation set
    task_eval_examples: int = 40  # questions answered and scored per set (held-out, trained); 0: none
    max_new_tokens: int = 64
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    influence_methods: list[str] = field(default_factory=lambda: ["datainf", "tracin"])  # []: no attribution
    influence_anchors: int = 3  # tracincp: held-out gradients at the start, the end and evenly between
    influence_projection_dim: int = 0  # 0: exact LoRA gradients when they fit in memory
    influence_aggregation: str = "sum"  # contributor shares: "sum" or "question_shares" (attribution/aggregation.py)
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
        return cls(**data)

    def validate(self) -> None:
        problems = []
        if self.method not in ("qlora", "lora", "dora", "full", "auto"):
            problems.append("method must be qlora, lora, dora, full or auto")
        if self.objective not in ("sft", "dpo", "orpo") or self.beta <= 0:
            problems.append("objective must be sft, dpo or orpo, with beta > 0")
        if self.precision not in ("auto", "bf16", "fp32"):
            problems.append("precision must be auto, bf16 or fp32")
        if self.compile_layers not in ("auto", "on", "off"):
            problems.append("compile_layers must be auto, on or off")
        if self.lora_r < 1 or self.lora_alpha < 1:
            problems.append("rank and alpha must be at least 1")
        if not 0 <= self.lora_dropout < 1:
            problems.append("dropout must be in [0, 1)")
        if not 0 < self.learning_rate < 1:
            problems.append("learning rate must be in (0, 1)")
        if not 1 <= self.loraplus_lr_ratio <= 64:
            problems.append("LoRA+ learning-rate ratio must be between 1 and 64")
        if self.lr_scheduler not in ("cosine", "linear", "constant"):
            problems.append("schedule must be cosine, linear or constant")
        if self.batch_size < 1 or self.gradient_accumulation < 1:
            problems.append("batch size and gradient accumulation must be at least 1")
        if not (1 <= self.devices <= 64 and 1 <= self.nodes <= 16 and self.devices * self.nodes <= self.batch_size):
            problems.append(
                "devices and nodes must be at least 1, and devices times nodes at most the batch size: each device "
                "takes a share of a batch"
            )
        if self.devices * self.nodes > 1 and (self.objective != "sft" or self.method == "full"):
            problems.append("several devices train supervised LoRA, QLoRA or DoRA runs only")
        if self.parallel not in ("ddp", "fsdp"):
            problems.append("parallel must be ddp or fsdp")
        elif self.parallel == "fsdp" and self.method == "qlora":
            problems.append(
                "FSDP shards a bf16 or fp32 base (LoRA or DoRA): bitsandbytes' 4-bit weights are not sharded here; "
                "QLoRA spreads over devices with DDP"
            )
        if self.epochs <= 0 and self.max_steps <= 0:
            problems.append("train for some epochs or steps")
        if not 16 <= self.max_seq_length <= 32768:
            problems.append("max sequence length must be between 16 and 32768")
        if not 0 <= self.eval_fraction < 0.5:
            problems.append("evaluation split must be between 0 and 0.5")
        if self.task_eval_examples < 0 or self.early_stopping_patience < 0:
            problems.append("task evaluation size and early-stopping patience cannot be negative")
        if set(self.influence_methods) - set(INFLUENCE_METHODS):
            problems.append(f"influence methods are among {', '.join(INFLUENCE_METHODS)}")
        if self.influence_anchors < 2:
            problems.append("influence anchors are at least 2 (the start and the end of training)")
        if self.influence_aggregation not in AGGREGATIONS:
            problems.append(f"influence aggregation is one of {', '.join(AGGREGATIONS)}")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class Run:
    """What a training run holds between its phases."""

    config: TrainConfig
    model: object
    tokenizer: object
    device: str
    compute: dict  # {"method", "bf16", "compiled"}
    train_set: list[Example]
    eval_set: list[Example]
    optimizer: object
    scheduler: object
    total_steps: int
    position: dict
    history: dict
    best_state: dict | None = None  # the adapter weights at the best held-out loss so far
    trace: object = None  # attribution.trace.StepTrace: influence gathered while training (tracincp)
