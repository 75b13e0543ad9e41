"""Reads for the job pages: the job list, and who the contributors in a job's influence table are."""

from collections import Counter

from datanets.models import Record

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
