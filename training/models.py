"""Training data model: the base-model catalogue (fine-tune jobs arrive with the Training issue)."""

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
