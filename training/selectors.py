"""Reads for the job pages: the job list, and the job's influence table with who its contributors are."""

from collections import Counter

from accounts.contributors import contributor_labels
from datanets.models import Record
from publishing import policy as publishing_policy

from .jobs.influence import influence_by_method
from .models import FineTuneJob


def jobs_listed(jobs_qs):
    """A page's worth of jobs with what the list shows (base model, Datanet versions) in three queries."""
    return jobs_qs.select_related("base_model").prefetch_related("datanet_versions__datanet")


def job_contributor_records(job: FineTuneJob) -> Counter:
    """Each contributor's records (user id -> count) in the job's data: training and held out together."""
    totals = Counter()
    for version in job.datanet_versions.all():
        for row in version.contributors or []:
            totals[int(row["contributor_id"])] += int(row.get("records", 0))
    return totals


def job_contributor_names(job: FineTuneJob, datanet_ids: list[int]) -> dict[int, str]:
    """User id -> username of the job's contributors to these Datanets (for those allowed to know)."""
    if not datanet_ids:
        return {}
    rows = (
        Record.objects.filter(versions__in=job.datanet_versions.all(), datanet_id__in=datanet_ids)
        .values_list("contributor_id", "contributor__username")
        .distinct()
    )
    return dict(rows.iterator())


def job_influence_summary(job: FineTuneJob, user) -> dict | None:
    """The default method's table with contributors as their manifests will name them, their usernames for
    staff and the Datanets' curators, and their records split into training and held out."""
    method, data = influence_by_method(job)
    if not data:
        return None
    ids = [int(row["contributor"]) for row in data["contributors"]]
    labels = contributor_labels(ids)
    names = job_contributor_names(job, publishing_policy.datanets_named_for_user(user, job))
    totals = job_contributor_records(job)
    rows = []
    for row in data["contributors"][:50]:
        pk = int(row["contributor"])
        total = max(totals.get(pk, 0), row["records"])
        rows.append(
            {**row, "label": labels.get(pk), "name": names.get(pk), "total": total, "held_out": total - row["records"]}
        )
    return {"method": method, "parameters": data["parameters"], "seconds": data["seconds"], "rows": rows}
