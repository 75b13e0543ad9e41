"""Who may chat with what. Chatting is permission-checked like downloading, with the same 404 for
missing and forbidden; team tokens reach only their team's adapters and public ones."""

from django.http import Http404

from publishing import policy as publishing_policy
from publishing.models import Adapter
from training import policy as training_policy
from training.models import FineTuneJob


def can_chat_adapter(user, adapter: Adapter, token=None) -> bool:
    return publishing_policy.can_download_adapter(user, adapter) and publishing_policy.token_reaches_adapter(
        token, adapter
    )


def get_adapter_for_chat(user, slug: str, version: int | None = None, token=None) -> Adapter:
    adapter = publishing_policy.get_adapter_for_user(user, slug, version)
    if not can_chat_adapter(user, adapter, token):
        raise Http404("No such adapter.")
    return adapter


def chat_adapters(user, token=None):
    """Adapters this user (or token) may chat with; every version, newest first within a slug."""
    if not user.is_authenticated:
        return Adapter.objects.none()
    return publishing_policy.visible_adapters(user, token=token).order_by("slug", "-version")


def get_job_for_chat(user, pk: int) -> FineTuneJob:
    job = training_policy.get_job_for_user(user, pk)
    if job.status != FineTuneJob.Status.SUCCEEDED:
        raise Http404("No such adapter.")
    return job
