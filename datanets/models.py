"""Datanets: curated datasets whose every record keeps its contributor, moderated, versioned, ledgered."""

from django.conf import settings
from django.db import models

from accounts.models import Team

from . import records

LICENSES = [
    ("CC-BY-4.0", "CC-BY-4.0"),
    ("CC-BY-SA-4.0", "CC-BY-SA-4.0"),
    ("CC-BY-NC-4.0", "CC-BY-NC-4.0"),
    ("CC0-1.0", "CC0-1.0"),
    ("MIT", "MIT"),
    ("Apache-2.0", "Apache-2.0"),
    ("ODbL-1.0", "ODbL-1.0"),
    ("CDLA-Permissive-2.0", "CDLA-Permissive-2.0"),
    ("LicenseRef-Proprietary", "Proprietary"),
]


class Datanet(models.Model):
    class Schema(models.TextChoices):
        INSTRUCTION = "instruction", "Instruction (instruction, input, output)"
        CHAT = "chat", "Chat (messages with role and content)"
        TEXT = "text", "Plain text"
        PREFERENCE = "preference", "Preference (a prompt or chat, a chosen and a rejected answer)"

    class Visibility(models.TextChoices):
        PUBLIC = "public", "Public: anyone may see and train on it"
        PERMISSIONED = "permissioned", "Permissioned: training needs a granted access request"
        PRIVATE = "private", "Private: only its team"

    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=120, unique=True)
    description = models.TextField(blank=True)
    domain_tags = models.CharField(max_length=300, blank=True, help_text="Comma-separated, e.g. medicine, cardiology")
    schema = models.CharField(max_length=20, choices=Schema.choices, default=Schema.INSTRUCTION)
    license = models.CharField(max_length=40, choices=LICENSES, default="CC-BY-4.0")
    visibility = models.CharField(max_length=20, choices=Visibility.choices, default=Visibility.PUBLIC)
    guidelines = models.TextField(blank=True, help_text="What good contributions look like")
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="datanets")
    curators = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="curated_datanets")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def tags(self) -> list[str]:
        return [tag.strip() for tag in self.domain_tags.split(",") if tag.strip()]


class Upload(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        VALIDATING = "validating", "Validating and storing"
        DONE = "done", "Done"
        REJECTED = "rejected", "Rejected"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    FINISHED = {Status.DONE, Status.REJECTED, Status.FAILED, Status.CANCELLED}

    datanet = models.ForeignKey(Datanet, on_delete=models.CASCADE, related_name="uploads")
    contributor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="uploads")
    file = models.FileField(upload_to="uploads/%Y/%m/")
    filename = models.CharField(max_length=255)
    format = models.CharField(max_length=10)
    size_bytes = models.BigIntegerField(default=0)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    lines_read = models.PositiveIntegerField(default=0)
    records_added = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    flagged = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True, help_text="[{line, reason}] for rejected lines")
    error_count = models.PositiveIntegerField(default=0)
    message = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False, help_text="Set when a cancel stopped the ingest")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.filename} → {self.datanet}"

    @property
    def finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def percent(self) -> int:
        return 100 if self.finished else 0


class Record(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending review"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        WITHDRAWN = "withdrawn", "Withdrawn"

    # Foreign keys without an index of their own where a composite index below starts with them, or
    # where nothing looks records up by them: every index is written once per ingested record. The
    # contributor's keeps its own, (contributor, id): "my contributions", newest first, a page at a time.
    datanet = models.ForeignKey(Datanet, on_delete=models.CASCADE, related_name="records", db_index=False)
    contributor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="records")
    upload = models.ForeignKey(
        Upload, null=True, blank=True, on_delete=models.SET_NULL, related_name="records", db_index=False
    )
    line_number = models.PositiveIntegerField(null=True, blank=True)
    content = models.JSONField()
    content_hash = models.CharField(max_length=64)
    token_count = models.PositiveIntegerField(default=0)
    flags = models.JSONField(default=list, blank=True)
    flag_kinds = models.CharField(max_length=200, blank=True)
    # Within its Datanet, and records are withdrawn rather than deleted: a plain column, no constraint.
    near_duplicate_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="+",
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    rejection_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["datanet", "content_hash"], name="record_once_per_datanet")]
        indexes = [
            models.Index(fields=["datanet", "status", "id"]),
            models.Index(fields=["contributor", "datanet", "status"]),  # covers a contributor's counts
            # The flagged queue in id order without reading every unflagged record (few are flagged).
            models.Index(fields=["datanet", "status", "id"], condition=~models.Q(flag_kinds=""), name="record_flagged"),
        ]

    def __str__(self) -> str:
        return f"record {self.pk} ({self.status})"

    @property
    def text(self) -> str:
        """The record's strings joined, as flags and near-duplicates saw them: flag spans index into it.
        Derived from the content rather than stored, so each record's text is not written twice."""
        return records.record_text(self.content)


class RecordBand(models.Model):
    """One LSH band key of a record's MinHash. Records that share a key in their Datanet are
    near-duplicate candidates; kept in the database so an ingest never holds a Datanet's index in memory.

    Written 8 times per record, so it is as narrow as it can be: the primary key (datanet, key, record)
    is the one index (on SQLite the table is WITHOUT ROWID, see migrations 0002 and 0004). Bands go with their
    Datanet; a record's bands are not deleted with it (records are withdrawn, not deleted), and lookups
    join the record, so a band without one matches nothing.
    """

    pk = models.CompositePrimaryKey("datanet", "key", "record")
    datanet = models.ForeignKey(
        Datanet, on_delete=models.CASCADE, db_constraint=False, db_index=False, related_name="+"
    )
    key = models.BigIntegerField()
    record = models.ForeignKey(
        Record, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+"
    )

    def __str__(self) -> str:
        return f"band {self.key} of record {self.record_id}"


class RejectionReason(models.Model):
    """A reusable reason a team's moderators pick when rejecting; another team never sees it."""

    team = models.ForeignKey(Team, null=True, on_delete=models.CASCADE, related_name="rejection_reasons")
    text = models.CharField(max_length=300)

    class Meta:
        ordering = ["text"]
        constraints = [models.UniqueConstraint(fields=["team", "text"], name="rejection_reason_once_per_team")]

    def __str__(self) -> str:
        return self.text


class DatanetVersion(models.Model):
    """A frozen set of approved records. Never updated: a new version supersedes it."""

    datanet = models.ForeignKey(Datanet, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    merkle_root = models.CharField(max_length=64)
    record_count = models.PositiveIntegerField()
    token_count = models.PositiveBigIntegerField()
    contributors = models.JSONField(help_text="[{contributor_id, username, records, tokens}]")
    changelog = models.JSONField(help_text="{added: n, removed: n, added_hashes: [...], removed_hashes: [...]}")
    license = models.CharField(max_length=40)
    notes = models.TextField(blank=True)
    records = models.ManyToManyField(Record, related_name="versions")
    published_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["datanet", "-number"]
        constraints = [models.UniqueConstraint(fields=["datanet", "number"], name="version_number_once")]

    def __str__(self) -> str:
        return f"{self.datanet.slug} v{self.number}"


class AccessRequest(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        GRANTED = "granted", "Granted"
        DENIED = "denied", "Denied"

    datanet = models.ForeignKey(Datanet, on_delete=models.CASCADE, related_name="access_requests")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="access_requests")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    message = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decision_message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["datanet", "team"], condition=models.Q(status="pending"), name="one_pending_request_per_team"
            )
        ]

    def __str__(self) -> str:
        return f"{self.team} → {self.datanet} ({self.status})"


class LedgerEntry(models.Model):
    """Append-only, hash-chained: hash = SHA-256(prev_hash || canonical JSON of the entry)."""

    sequence = models.PositiveBigIntegerField(unique=True)
    event = models.CharField(max_length=50)
    payload = models.JSONField()
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField()
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["sequence"]
        verbose_name_plural = "ledger entries"

    def __str__(self) -> str:
        return f"#{self.sequence} {self.event}"
