"""Training data model: the base-model catalogue (fine-tune jobs arrive with the Training issue)."""

from django.conf import settings
from django.db import models


class BaseModel(models.Model):
    class Status(models.TextChoices):
        IMPORTING = "importing", "Importing"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    name = models.CharField(max_length=200, unique=True)
    slug = models.SlugField(max_length=200, unique=True)
    architecture = models.CharField(max_length=100, blank=True)
    parameter_count = models.BigIntegerField(default=0)
    context_length = models.PositiveIntegerField(default=0)
    license = models.CharField(max_length=100, help_text="SPDX identifier, e.g. apache-2.0")
    chat_template = models.TextField(blank=True)
    weights_sha256 = models.CharField(max_length=64, blank=True)
    source = models.CharField(max_length=500, help_text="The GGUF file or directory it was imported from")
    local_path = models.CharField(max_length=500, blank=True, help_text="Safetensors directory on the workers")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.IMPORTING)
    error = models.TextField(blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def parameters_display(self) -> str:
        count = self.parameter_count
        for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
            if count >= size:
                return f"{count / size:.1f}{unit}"
        return str(count)


class FineTuneJob(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        EVALUATING = "evaluating", "Evaluating"
        ATTRIBUTING = "attributing", "Attributing"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    ACTIVE = (Status.QUEUED, Status.RUNNING, Status.EVALUATING, Status.ATTRIBUTING)
    WORKING = (Status.RUNNING, Status.EVALUATING, Status.ATTRIBUTING)
    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    name = models.CharField(max_length=200)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="fine_tune_jobs")
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="jobs")
    datanet_versions = models.ManyToManyField("datanets.DatanetVersion", related_name="jobs")
    validation_version = models.ForeignKey(
        "datanets.DatanetVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="validating_jobs",
        help_text="Held-out records to evaluate and attribute on, instead of a share of the training data",
    )
    method = models.CharField(max_length=10, default="qlora")
    preset = models.CharField(max_length=20, default="balanced")
    config = models.JSONField(help_text="The resolved trainer config")
    estimate = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED, db_index=True)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True, help_text="Loss curves, rates, timings")
    logs = models.JSONField(default=list, blank=True, help_text="The last log lines")
    evaluation = models.JSONField(default=dict, blank=True)
    influence = models.JSONField(
        default=dict, blank=True, help_text="Per-contributor influence by method (contributor = user id)"
    )
    worker = models.CharField(max_length=200, blank=True)
    device = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    resumed_from_step = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    adapter_path = models.CharField(max_length=500, blank=True, help_text="Storage prefix of the outputs")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "created_at"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def devices(self) -> int:
        """Devices (GPUs, or processes on a CPU worker) the run trains on together."""
        return int((self.config or {}).get("devices", 1))

    @property
    def nodes(self) -> int:
        """Workers the run spans, each with ``devices`` devices."""
        return int((self.config or {}).get("nodes", 1))

    @property
    def percent(self) -> int:
        return int(100 * self.step / self.total_steps) if self.total_steps else 0


class RecordInfluence(models.Model):
    """One training record's influence on a job's held-out loss, by one method (helpful is positive)."""

    job = models.ForeignKey(FineTuneJob, on_delete=models.CASCADE, related_name="record_influences")
    record = models.ForeignKey("datanets.Record", on_delete=models.PROTECT, related_name="influences")
    method = models.CharField(max_length=20)
    score = models.FloatField()
    computed_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "record", "method"], name="record_influence_once")]

    def __str__(self) -> str:
        return f"record {self.record_id} in job {self.job_id}: {self.method} {self.score:.4g}"
