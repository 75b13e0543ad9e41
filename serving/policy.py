"""Who may chat with what. Chatting is permission-checked like downloading, with the same 404 for
missing and forbidden; team tokens reach only their team's adapters and public ones."""

from django.db.models import Q
from django.http import Http404

from publishing import policy as publishing_policy
from publishing.models import Adapter
from training import policy as training_policy
from training.models import FineTuneJob


def _token_allows(token, adapter: Adapter) -> bool:
    return token is None or not token.team_id or adapter.visibility == "public" or adapter.team_id == token.team_id


def can_chat_adapter(user, adapter: Adapter, token=None) -> bool:
    return publishing_policy.can_download_adapter(user, adapter) and _token_allows(token, adapter)


def get_adapter_for_chat(user, slug: str, version: int | None = None, token=None) -> Adapter:
    adapter = publishing_policy.get_adapter_for_user(user, slug, version)
    if not can_chat_adapter(user, adapter, token):
        raise Http404("No such adapter.")
    return adapter


def chat_adapters(user, token=None):
    """Adapters this user (or token) may chat with; every version, newest first within a slug."""
    if not user.is_authenticated:
        return Adapter.objects.none()
    adapters = publishing_policy.visible_adapters(user)
    if token is not None and token.team_id:
        adapters = adapters.filter(Q(visibility=Adapter.Visibility.PUBLIC) | Q(team_id=token.team_id))
    return adapters.order_by("slug", "-version")


def get_job_for_chat(user, pk: int) -> FineTuneJob:
    job = training_policy.get_job_for_user(user, pk)
    if job.status != FineTuneJob.Status.SUCCEEDED:
        raise Http404("No such adapter.")
    return job
