"""Published adapters (immutable; a new version supersedes), publications in progress, API tokens, contributor
preferences."""

from django.conf import settings
from django.db import models

from accounts.models import Team


class Adapter(models.Model):
    class Visibility(models.TextChoices):
        TEAM = "team", "Its team"
        PUBLIC = "public", "Public"

    slug = models.SlugField(max_length=120)
    version = models.PositiveIntegerField()
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    domain = models.CharField(max_length=100, blank=True)
    visibility = models.CharField(max_length=10, choices=Visibility.choices, default=Visibility.TEAM)
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="adapters")
    job = models.ForeignKey("training.FineTuneJob", on_delete=models.PROTECT, related_name="adapters")
    base_model = models.ForeignKey("training.BaseModel", on_delete=models.PROTECT, related_name="adapters")
    datanet_versions = models.ManyToManyField("datanets.DatanetVersion", related_name="adapters")
    manifest = models.JSONField()
    manifest_sha256 = models.CharField(max_length=64)
    zip_name = models.CharField(max_length=500, help_text="Storage name of the signed zip")
    zip_bytes = models.BigIntegerField(default=0)
    download_count = models.PositiveIntegerField(default=0)
    published_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug", "-version"]
        constraints = [models.UniqueConstraint(fields=["slug", "version"], name="adapter_version_once")]

    def __str__(self) -> str:
        return f"{self.slug} v{self.version}"


class Publication(models.Model):
    """A request to publish a succeeded job as an adapter, and its progress. A task builds the signed zip; the
    Adapter row appears only when everything is written, so a failed publication leaves nothing visible and
    is retried in place. One publication of a job runs at a time."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Publishing"
        SUCCEEDED = "succeeded", "Published"
        FAILED = "failed", "Failed"

    class Phase(models.TextChoices):
        WAITING = "", "Waiting for a worker"
        FILES = "files", "Copying the adapter files"
        RECORDS = "records", "Writing records.jsonl"
        MANIFEST = "manifest", "Summarising contributors and signing the manifest"
        ZIP = "zip", "Zipping and storing the adapter"
        SAVING = "saving", "Recording the adapter"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    job = models.ForeignKey("training.FineTuneJob", on_delete=models.CASCADE, related_name="publications")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="+")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    domain = models.CharField(max_length=100, blank=True)
    visibility = models.CharField(max_length=10, choices=Adapter.Visibility.choices, default=Adapter.Visibility.TEAM)
    influence_method = models.CharField(max_length=20, blank=True, help_text="Empty: the job's default method")
    recomputed_from = models.PositiveIntegerField(null=True, blank=True, help_text="Re-attribution of this version")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    phase = models.CharField(max_length=10, choices=Phase.choices, blank=True, default=Phase.WAITING)
    rows_done = models.PositiveIntegerField(default=0)
    rows_total = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    adapter = models.OneToOneField(Adapter, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    progress_at = models.DateTimeField(null=True, blank=True, help_text="The task's last progress report")
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["job"],
                condition=models.Q(status__in=["queued", "running"]),
                name="publication_one_active_per_job",
            )
        ]

    def __str__(self) -> str:
        return f"publication of job {self.job_id} as {self.name} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.FAILED)

    @property
    def percent(self) -> int:
        return int(100 * self.rows_done / self.rows_total) if self.rows_total else 0


class AdapterRecord(models.Model):
    """Which records went into which adapter: the contributor view and attribution queries read this."""

    adapter = models.ForeignKey(Adapter, on_delete=models.CASCADE, related_name="used_records")
    record = models.ForeignKey("datanets.Record", on_delete=models.PROTECT, related_name="adapter_uses")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["adapter", "record"], name="adapter_record_once")]

    def __str__(self) -> str:
        return f"record {self.record_id} in adapter {self.adapter_id}"


class ApiToken(models.Model):
    class Scope(models.TextChoices):
        READ = "read", "Read"
        DOWNLOAD = "download", "Read and download"
        TRAIN = "train", "Read, download, upload files and fine-tune"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, db_index=True)
    key_sha256 = models.CharField(max_length=64, unique=True)
    scope = models.CharField(max_length=10, choices=Scope.choices, default=Scope.READ)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class AdapterExport(models.Model):
    """The exports of one adapter version (merged weights, GGUF f16, GGUF q8_0), built by a task on request and
    kept with the version: a version never changes, so neither do its exports. A failed build is retried in
    place; one build of a version runs at a time."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Exporting"
        SUCCEEDED = "succeeded", "Ready"
        FAILED = "failed", "Failed"

    class Phase(models.TextChoices):
        WAITING = "", "Waiting for a worker"
        MERGED = "merged", "Merging the adapter into the base model"
        GGUF_F16 = "gguf-f16", "Writing GGUF f16"
        GGUF_Q8_0 = "gguf-q8_0", "Writing GGUF q8_0"
        STORING = "storing", "Signing and storing the exports"

    ACTIVE = (Status.QUEUED, Status.RUNNING)
    FORMATS = {
        "merged": "Merged weights (safetensors, Hugging Face layout)",
        "gguf-f16": "GGUF f16 with an Ollama Modelfile",
        "gguf-q8_0": "GGUF q8_0 with an Ollama Modelfile",
    }

    adapter = models.OneToOneField(Adapter, on_delete=models.CASCADE, related_name="export")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    phase = models.CharField(max_length=10, choices=Phase.choices, blank=True, default=Phase.WAITING)
    steps_done = models.PositiveIntegerField(default=0)
    steps_total = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    files = models.JSONField(default=dict, blank=True, help_text="format -> {name, bytes, sha256}")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    progress_at = models.DateTimeField(null=True, blank=True, help_text="The task's last progress report")
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"exports of {self.adapter} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.FAILED)

    @property
    def percent(self) -> int:
        return int(100 * self.steps_done / self.steps_total) if self.steps_total else 0
