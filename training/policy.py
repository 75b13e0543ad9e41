"""Who may see and steer fine-tune jobs: their owner and site staff. Everyone else gets a 404."""

from django.http import Http404

from .models import FineTuneJob


def can_manage_job(user, job: FineTuneJob) -> bool:
    return user.is_authenticated and (user.is_staff or job.owner_id == user.pk)


def get_job_for_user(user, pk: int) -> FineTuneJob:
    job = FineTuneJob.objects.select_related("base_model", "owner").filter(pk=pk).first()
    if job is None or not can_manage_job(user, job):
        raise Http404("No such job.")
    return job


def jobs_for_user(user):
    jobs = FineTuneJob.objects.select_related("base_model")
    return jobs if user.is_staff else jobs.filter(owner=user)
