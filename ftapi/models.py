"""What the OpenAI-compatible files and fine-tuning jobs API adds to uploads and fine-tune jobs: the team a
file or job belongs to and the fields OpenAI's objects carry. The records and the runs themselves stay
Datanet uploads and FineTuneJobs, so the browser shows them as any other."""

from django.conf import settings
from django.db import models

from accounts.models import Team


class ApiFile(models.Model):
    """A file uploaded to /v1/files: one upload (a contribution by the token's owner) to a Datanet."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="api_files")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_files")
    datanet = models.ForeignKey("datanets.Datanet", on_delete=models.PROTECT, related_name="api_files")
    upload = models.OneToOneField("datanets.Upload", on_delete=models.PROTECT, related_name="api_file")
    version = models.ForeignKey(
        "datanets.DatanetVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="api_files",
        help_text="The version published on upload (a private Datanet created for the file)",
    )
    filename = models.CharField(max_length=255)
    bytes = models.BigIntegerField(default=0)
    purpose = models.CharField(max_length=20, default="fine-tune")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-pk"]

    def __str__(self) -> str:
        return f"file-{self.pk} ({self.filename})"

    @property
    def public_id(self) -> str:
        return f"file-{self.pk}"


class ApiJob(models.Model):
    """The OpenAI fields of a fine-tune job created through /v1/fine_tuning/jobs."""

    job = models.OneToOneField("training.FineTuneJob", primary_key=True, on_delete=models.CASCADE, related_name="api")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="api_jobs")
    training_file = models.CharField(max_length=40)
    validation_file = models.CharField(max_length=40, blank=True)
    suffix = models.CharField(max_length=64, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    hyperparameters = models.JSONField(default=dict, blank=True, help_text="As asked: numbers or 'auto'")

    def __str__(self) -> str:
        return f"ftjob-{self.job_id}"
