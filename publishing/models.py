"""Published adapters (immutable; a new version supersedes), API tokens, contributor preferences."""

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
