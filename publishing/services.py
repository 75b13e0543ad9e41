"""Publishing use cases: request, run and retry a publication (the pipeline is ``publish``), count downloads,
API tokens."""

from __future__ import annotations

import hashlib
import logging
import secrets
import zipfile
from datetime import timedelta
from decimal import Decimal

from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.text import slugify

from accounts.contributors import contributor_pseudonym
from attribution import influence as influence_lib
from modelfactory.exceptions import ApplicationError
from training import jobs as training_jobs
from training.jobs.influence import influence_by_method, influence_recompute

from . import policy, publish
from .models import Adapter, ApiToken, Publication

logger = logging.getLogger(__name__)


def publication_check(*, job, by, team, name: str, visibility: str, influence_method: str | None = None) -> str:
    """Raise why this job may not be published so, or return the adapter's slug. Asked when a publication is
    requested and again when its task starts (teams and roles may change in between)."""
    if not policy.can_publish_job(by, job, team):
        raise ApplicationError(
            "Only the job's owner publishes it, as an owner or admin of the team, once it has succeeded."
        )
    refusal = policy.publication_refusal(job, team, visibility)
    if refusal:
        raise ApplicationError(refusal)
    slug = slugify(name)
    if not slug:
        raise ApplicationError("An adapter name needs at least one letter or digit.")
    if Adapter.objects.filter(slug=slug).exclude(team=team).exists():
        raise ApplicationError(f"The name {slug!r} belongs to another team's adapter; choose another.")
    if "adapter/adapter_model.safetensors" not in training_jobs.job_outputs(job):
        raise ApplicationError("This job's adapter files are missing from storage.")
    if influence_method and influence_by_method(job, influence_method)[1] is None:
        raise ApplicationError(f"No {influence_method} influence has been computed for this job.")
    return slug


STALE_AFTER = timedelta(minutes=30)  # no progress report for this long: its worker died


def _publications_fail_stale(job) -> None:
    """A running publication whose worker stopped reporting would block the job's publishing for good:
    fail it, so that it can be retried or the job published again."""
    Publication.objects.filter(
        job=job, status=Publication.Status.RUNNING, progress_at__lt=timezone.now() - STALE_AFTER
    ).update(
        status=Publication.Status.FAILED,
        finished_at=timezone.now(),
        error="The worker publishing this stopped reporting progress; nothing was published. Retry.",
    )


def _publication_create(
    *, job, by, team, name, description, visibility, domain, influence_method, recomputed_from
) -> tuple[Publication, bool]:
    """A queued publication, or the one of this job that is queued or running already (created: False)."""
    publication_check(job=job, by=by, team=team, name=name, visibility=visibility, influence_method=influence_method)
    _publications_fail_stale(job)
    running = Publication.objects.filter(job=job, status__in=Publication.ACTIVE).first()
    if running is not None:
        return running, False
    try:
        with transaction.atomic():
            publication = Publication.objects.create(
                job=job,
                team=team,
                requested_by=by,
                name=name,
                description=description,
                domain=domain,
                visibility=visibility,
                influence_method=influence_method or "",
                recomputed_from=recomputed_from,
            )
    except IntegrityError:  # requested twice at once: the constraint lets one through
        return Publication.objects.get(job=job, status__in=Publication.ACTIVE), False
    return publication, True


def publication_request(
    *,
    job,
    by,
    team,
    name: str,
    description: str = "",
    visibility: str = "team",
    domain: str = "",
    influence_method: str | None = None,
    recomputed_from: int | None = None,
) -> Publication:
    """Publish a succeeded job as a signed adapter zip: checked now, built by a task on the default queue.
    Requesting it again while one of the job's publications is queued or running returns that one."""
    publication, created = _publication_create(
        job=job,
        by=by,
        team=team,
        name=name,
        description=description,
        visibility=visibility,
        domain=domain,
        influence_method=influence_method,
        recomputed_from=recomputed_from,
    )
    if created:
        from .tasks import publication_run_task

        publication_run_task.delay_on_commit(publication.pk)
    return publication


def publication_retry(*, publication: Publication, by) -> Publication:
    """Queue a failed publication again, as it was requested."""
    _publications_fail_stale(publication.job)
    publication.refresh_from_db()
    if publication.status != Publication.Status.FAILED:
        raise ApplicationError("Only a failed publication is retried.")
    publication_check(
        job=publication.job,
        by=by,
        team=publication.team,
        name=publication.name,
        visibility=publication.visibility,
        influence_method=publication.influence_method,
    )
    if Publication.objects.filter(job=publication.job, status__in=Publication.ACTIVE).exists():
        raise ApplicationError("Another publication of this job is running; wait for it to finish.")
    Publication.objects.filter(pk=publication.pk).update(
        status=Publication.Status.QUEUED, phase=Publication.Phase.WAITING, error="", rows_done=0, finished_at=None
    )
    publication.refresh_from_db()
    from .tasks import publication_run_task

    publication_run_task.delay_on_commit(publication.pk)
    return publication


def _publication_progress(publication_id: int):
    def progress(phase, **rows):
        Publication.objects.filter(pk=publication_id).update(phase=phase, progress_at=timezone.now(), **rows)

    return progress


def publication_run(*, publication_id: int) -> str:
    """The task's work: claim the queued publication, build it, and record how it ended. Safe to run twice:
    a publication that is not queued (running elsewhere, published, failed) is left as it is."""
    claimed = Publication.objects.filter(pk=publication_id, status=Publication.Status.QUEUED).update(
        status=Publication.Status.RUNNING, started_at=timezone.now(), progress_at=timezone.now()
    )
    publication = (
        Publication.objects.select_related("job", "job__base_model", "team", "requested_by")
        .filter(pk=publication_id)
        .first()
    )
    if publication is None or not claimed:
        return publication.status if publication else "missing"
    outcome = {"status": Publication.Status.FAILED}
    try:
        publication_check(
            job=publication.job,
            by=publication.requested_by,
            team=publication.team,
            name=publication.name,
            visibility=publication.visibility,
            influence_method=publication.influence_method,
        )
        adapter = publish.adapter_build(publication, _publication_progress(publication.pk))
    except ApplicationError as error:
        outcome["error"] = error.message
    except IntegrityError:
        outcome["error"] = "Another version of this adapter was published at the same moment: retry."
    except Exception as error:
        logger.exception("publication %s failed", publication_id)
        outcome["error"] = f"Publishing failed ({type(error).__name__}: {error}); nothing was published. Retry."
    else:
        outcome.update(status=Publication.Status.SUCCEEDED, adapter=adapter)
    outcome["finished_at"] = timezone.now()
    Publication.objects.filter(pk=publication_id).update(**outcome)
    return outcome["status"]


def adapter_publish(
    *,
    job,
    by,
    team,
    name: str,
    description: str = "",
    visibility: str = "team",
    domain: str = "",
    influence_method: str | None = None,
    recomputed_from: int | None = None,
) -> Adapter:
    """Publish in this process, waiting for the adapter: for the command line (re-attribution) and tests.
    The web requests a publication and lets the task build it (``publication_request``)."""
    publication, created = _publication_create(
        job=job,
        by=by,
        team=team,
        name=name,
        description=description,
        visibility=visibility,
        domain=domain,
        influence_method=influence_method,
        recomputed_from=recomputed_from,
    )
    if not created:
        raise ApplicationError("Another publication of this job is running; wait for it to finish.")
    publication_run(publication_id=publication.pk)
    publication.refresh_from_db()
    if publication.status != Publication.Status.SUCCEEDED:
        raise ApplicationError(publication.error)
    return publication.adapter


def adapter_reattribute(
    *, adapter: Adapter, method: str, projection_dim: int = 0, aggregation: str | None = None, progress=None
) -> Adapter:
    """Measure influence for the adapter's job again with ``method`` and publish the result as the next
    version of the adapter (same files and data, a new signed manifest); published versions never change."""
    influence_recompute(
        job=adapter.job, methods=[method], projection_dim=projection_dim, aggregation=aggregation, progress=progress
    )
    return adapter_publish(
        job=adapter.job,
        by=adapter.published_by,
        team=adapter.team,
        name=adapter.name,
        description=adapter.description,
        visibility=adapter.visibility,
        domain=adapter.domain,
        influence_method=method,
        recomputed_from=adapter.version,
    )


def adapter_card(adapter: Adapter) -> str:
    """The model card, read from the signed zip itself so the page shows exactly what was signed."""
    with default_storage.open(adapter.zip_name, "rb") as handle, zipfile.ZipFile(handle) as archive:
        return archive.read("README.md").decode("utf-8")


def adapter_download_counted(*, adapter: Adapter):
    """Open the signed zip for streaming and count the download."""
    Adapter.objects.filter(pk=adapter.pk).update(download_count=F("download_count") + 1)
    return default_storage.open(adapter.zip_name, "rb")


def reward_split(*, adapter: Adapter, amount: Decimal) -> list[dict]:
    """Payouts per contributor by influence share, in cents rounded so that they add up to the amount."""
    influence = adapter.manifest.get("influence")
    if not influence:
        raise ApplicationError("This adapter has no influence measurement to split a reward by.")
    if amount <= 0 or amount.as_tuple().exponent < -2:
        raise ApplicationError("Enter a positive amount with at most two decimals.")
    shares = {c["id"]: c["share"] for c in influence["contributors"]}
    cents = influence_lib.payouts(int(amount * 100), shares)
    users = {
        contributor_pseudonym(pk): username
        for pk, username in adapter.used_records.values_list("record__contributor_id", "record__contributor__username")
        .distinct()
        .iterator()
    }
    return [
        {
            "contributor": cid,
            "username": users.get(cid, ""),
            "share": shares[cid],
            "payout": (Decimal(cents[cid]) / 100).quantize(Decimal("0.01")),
        }
        for cid in sorted(shares, key=lambda c: (-cents[c], c))
    ]


# API tokens -----------------------------------------------------------------------------------

TOKEN_PREFIX = "mf_"


def token_create(*, user, name: str, scope: str, team=None) -> tuple[ApiToken, str]:
    """Returns the token row and the secret, which is shown once and stored only as a hash."""
    if team is not None and not team.memberships.filter(user=user).exists():
        raise ApplicationError("A team token needs you to be in that team.")
    if scope not in ApiToken.Scope.values:
        raise ApplicationError("Unknown scope.")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        team=team,
        name=name.strip() or "token",
        prefix=secret[:10],
        scope=scope,
        key_sha256=hashlib.sha256(secret.encode()).hexdigest(),
    )
    return token, secret


def token_authenticate(secret: str) -> ApiToken | None:
    if not secret.startswith(TOKEN_PREFIX):
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_sha256=hashlib.sha256(secret.encode()).hexdigest(), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if token is not None:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token


def token_revoke(*, token: ApiToken, by) -> ApiToken:
    if token.user_id != by.pk:
        raise ApplicationError("Only the token's owner revokes it.")
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    return token
