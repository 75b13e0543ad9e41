from django import forms

from .display import SETTINGS
from .presets import DEFAULT, PRESETS


class VersionsForm(forms.Form):
    versions = forms.ModelMultipleChoiceField(
        queryset=None, widget=forms.CheckboxSelectMultiple, error_messages={"required": "Pick at least one Datanet."}
    )

    def __init__(self, *args, queryset=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["versions"].queryset = queryset
        self.fields["versions"].label_from_instance = lambda v: (
            f"{v.datanet.name} v{v.number}: {v.record_count} records, {v.token_count} tokens, licence {v.license}"
        )


class BaseModelForm(forms.Form):
    base_model = forms.ModelChoiceField(queryset=None, widget=forms.RadioSelect, empty_label=None)

    def __init__(self, *args, queryset=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["base_model"].queryset = queryset
        self.fields["base_model"].label_from_instance = lambda m: (
            f"{m.name}: {m.parameters_display} parameters, context {m.context_length}, licence {m.license}"
        )


class MethodForm(forms.Form):
    method = forms.ChoiceField(
        choices=[
            ("auto", "Automatic (recommended): the faster of LoRA and QLoRA that fits the worker's memory"),
            ("qlora", "QLoRA: 4-bit NF4 base, least memory"),
            ("lora", "LoRA: unquantised base, faster where memory allows"),
            ("dora", "DoRA: LoRA with weight decomposition (magnitude and direction), unquantised base"),
            ("full", "Full fine-tuning: every weight trains; only for models small enough"),
        ],
        widget=forms.RadioSelect,
        initial="auto",
    )
    objective = forms.ChoiceField(
        choices=[
            ("sft", "Supervised: learn the answers (instruction, chat and text Datanets)"),
            (
                "dpo",
                "DPO: prefer the chosen answer over the rejected one, the base model as reference (preference Datanets)",
            ),
            ("orpo", "ORPO: learn the chosen answer and prefer it, no reference model (preference Datanets)"),
        ],
        widget=forms.RadioSelect,
        initial="sft",
        required=False,
    )
    beta = forms.FloatField(required=False, min_value=0.001, max_value=10, help_text="DPO's and ORPO's beta")
    preset = forms.ChoiceField(
        choices=[(key, value["label"]) for key, value in PRESETS.items()], widget=forms.RadioSelect, initial=DEFAULT
    )
    lora_r = forms.IntegerField(required=False, min_value=1, max_value=256)
    lora_alpha = forms.IntegerField(required=False, min_value=1, max_value=512)
    lora_dropout = forms.FloatField(required=False, min_value=0, max_value=0.9)
    target_modules = forms.CharField(required=False, help_text="all-linear, or names like q_proj,v_proj")
    learning_rate = forms.FloatField(required=False, min_value=1e-7, max_value=0.1)
    loraplus_lr_ratio = forms.FloatField(
        required=False,
        min_value=1,
        max_value=64,
        help_text="LoRA+: the adapter's B matrices learn this many times faster than its A matrices; 1 is plain LoRA",
    )
    lr_scheduler = forms.ChoiceField(
        required=False,
        choices=[("", "the preset's"), ("cosine", "cosine"), ("linear", "linear"), ("constant", "constant")],
    )
    epochs = forms.FloatField(required=False, min_value=0.1, max_value=100)
    batch_size = forms.IntegerField(required=False, min_value=1, max_value=512)
    gradient_accumulation = forms.IntegerField(required=False, min_value=1, max_value=512)
    max_seq_length = forms.IntegerField(required=False, min_value=16, max_value=32768)
    eval_fraction = forms.FloatField(
        required=False,
        min_value=0,
        max_value=0.49,
        help_text="Share of records kept out of training to measure generalisation (at most 100 records); 0 "
        "trains on every record, and recall on trained records is measured either way.",
    )
    early_stopping_patience = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=100,
        label="Early stopping",
        help_text="Stop after this many held-out checks (one an epoch) without a better held-out loss and keep the "
        "best adapter; 0 (default) trains every planned epoch: on fact Datanets the held-out loss of unseen facts "
        "rises while recall of trained ones still improves.",
    )
    seed = forms.IntegerField(required=False, min_value=0)
    influence_methods = forms.ChoiceField(
        required=False,
        choices=[
            ("", "DataInf and TracIn on the trained adapter (default): one more pass over every record"),
            (
                "tracincp",
                "TracInCP while training: each record's real updates, no pass over the records after training "
                "(supervised runs on one device; LoRA on a CPU then runs uncompiled)",
            ),
        ],
        help_text="How each record's influence on the held-out loss is measured; DataInf and TracIn can be "
        "recomputed for a published adapter later, TracInCP only while it trains.",
    )
    nodes = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=16,
        help_text="Train across this many workers, each with the devices above (torchrun's rendezvous); they need "
        "JOB_WORK_DIR on storage they share.",
    )
    devices = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=64,
        help_text="Train on this many GPUs of one worker together (DDP under torchrun): each takes a share of every "
        "batch, so the batch is at least this large. Only a worker with this many devices takes the job.",
    )
    parallel = forms.ChoiceField(
        required=False,
        choices=[
            ("", "DDP (default): a whole model on every device"),
            ("ddp", "DDP: a whole model on every device"),
            ("fsdp", "FSDP: the base model sharded over the devices, for a base too large for one (LoRA and DoRA)"),
        ],
        help_text="How several devices share the model. FSDP keeps a share of the base weights on each device and "
        "gathers a layer's whole weights only while it computes: less memory a device, more traffic between them.",
    )

    def __init__(self, *args, preset_values: dict[str, dict] | None = None, **kwargs):
        """``preset_values``: each preset's value of every advanced field, shown in the empty fields."""
        super().__init__(*args, **kwargs)
        for name, field in self.fields.items():
            field.label = SETTINGS.get(name, field.label)
        self.preset_values = preset_values or {}
        chosen = self.data.get("preset") or self.initial.get("preset") or DEFAULT
        values = self.preset_values.get(chosen, {})
        for name, value in values.items():
            if name == "lr_scheduler":
                self.fields[name].choices = [("", f"the preset's ({value})"), *self.fields[name].choices[1:]]
            elif value is not None:
                self.fields[name].widget.attrs["placeholder"] = value

    def advanced(self) -> dict:
        data = {k: v for k, v in self.cleaned_data.items() if k not in ("method", "preset") and v not in (None, "")}
        if "influence_methods" in data:
            data["influence_methods"] = [data["influence_methods"]]
        if "target_modules" in data and data["target_modules"] != "all-linear":
            data["target_modules"] = [name.strip() for name in data["target_modules"].split(",") if name.strip()]
        return data


class LaunchForm(forms.Form):
    name = forms.CharField(
        required=False, max_length=200, help_text="Optional; the name shown greyed is used otherwise"
    )

    def __init__(self, *args, default_name: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        if default_name:
            self.fields["name"].widget.attrs["placeholder"] = default_name
