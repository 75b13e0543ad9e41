"""Who may see, download and publish adapters. Pages, downloads and the API all ask here."""

from django.db.models import Q
from django.http import Http404

from accounts.models import Membership
from datanets import policy as datanet_policy
from datanets.models import AccessRequest, Datanet
from training.models import FineTuneJob

from .models import Adapter, AdapterRecord, Publication


def can_view_adapter(user, adapter: Adapter) -> bool:
    if adapter.visibility == Adapter.Visibility.PUBLIC:
        return True
    if not user.is_authenticated:
        return False
    return user.is_staff or Membership.objects.filter(team_id=adapter.team_id, user=user).exists()


def can_download_adapter(user, adapter: Adapter) -> bool:
    return user.is_authenticated and can_view_adapter(user, adapter)


def can_export_adapter(user, adapter: Adapter) -> bool:
    """An export is the adapter in another form (merged into its base, or GGUF): whoever may download the
    adapter may have its exports built and download them; no one else learns that they exist."""
    return can_download_adapter(user, adapter)


def can_split_rewards(user, adapter: Adapter) -> bool:
    """Payouts name contributors by username: site staff only."""
    return user.is_authenticated and user.is_staff and can_view_adapter(user, adapter)


def can_publish_job(user, job: FineTuneJob, team) -> bool:
    """The job's owner publishes it as an owner or admin of the team it goes under; staff publish anything."""
    if not user.is_authenticated or job.status != FineTuneJob.Status.SUCCEEDED:
        return False
    if user.is_staff:
        return True
    managers = (Membership.Role.OWNER, Membership.Role.ADMIN)
    return job.owner_id == user.pk and Membership.objects.filter(team=team, user=user, role__in=managers).exists()


def publication_refusal(job: FineTuneJob, team, visibility: str) -> str | None:
    """Why the job's training data forbid publishing it under this team with this visibility, or None.

    An adapter carries its Datanets' names and Merkle roots and is derived from their records, so it is
    seen by no one who may not see every Datanet version it was trained on: data that are not public keep
    the adapter to a team, and that team is the Datanet's own or one granted access to it."""
    for version in job.datanet_versions.select_related("datanet", "datanet__team"):
        datanet = version.datanet
        if datanet.visibility == Datanet.Visibility.PUBLIC:
            continue
        if visibility == Adapter.Visibility.PUBLIC:
            return f"{datanet.name} is {datanet.visibility}: an adapter trained on it is visible to its team only."
        if datanet.team_id == team.pk:
            continue
        granted = AccessRequest.objects.filter(datanet=datanet, team=team, status=AccessRequest.Status.GRANTED)
        if datanet.visibility == Datanet.Visibility.PERMISSIONED and granted.exists():
            continue
        return f"{team.name} may not see {datanet.name}: publish this adapter under {datanet.team.name}."
    return None


def get_publication_for_user(user, pk: int) -> Publication:
    """A publication's progress page is for whoever requested it (and staff): the same 404 for missing and
    forbidden. Its adapter, once published, is seen as any adapter is."""
    publication = Publication.objects.select_related("job", "team", "adapter").filter(pk=pk).first()
    if publication is None or not user.is_authenticated:
        raise Http404("No such publication.")
    if not (user.is_staff or publication.requested_by_id == user.pk):
        raise Http404("No such publication.")
    return publication


def token_reaches_adapter(token, adapter: Adapter) -> bool:
    """A team token reaches its team's adapters and public ones, not all its user may; a personal token (or
    a session: no token) reaches what its user may."""
    if token is None or not token.team_id:
        return True
    return adapter.visibility == Adapter.Visibility.PUBLIC or adapter.team_id == token.team_id


def visible_adapters(user, token=None):
    """The adapters this user (through this API token, if any) may see."""
    adapters = Adapter.objects.select_related("base_model", "team")
    if not (user.is_authenticated and user.is_staff):
        visible = Q(visibility=Adapter.Visibility.PUBLIC)
        if user.is_authenticated:
            visible |= Q(team__memberships__user=user)
        adapters = adapters.filter(visible).distinct()
    if token is not None and token.team_id:
        adapters = adapters.filter(Q(visibility=Adapter.Visibility.PUBLIC) | Q(team_id=token.team_id))
    return adapters


def get_adapter_for_user(user, slug: str, version: int | None = None, token=None) -> Adapter:
    """The adapter (latest version unless one is named), or the same 404 for missing and forbidden."""
    adapters = Adapter.objects.select_related("base_model", "team", "job").filter(slug=slug)
    adapter = adapters.filter(version=version).first() if version else adapters.order_by("-version").first()
    if adapter is None or not can_view_adapter(user, adapter) or not token_reaches_adapter(token, adapter):
        raise Http404("No such adapter.")
    return adapter


def can_view_receipt(user, adapter: Adapter) -> bool:
    """A contributor always sees their own receipt for an adapter that used their records, whoever may see
    the adapter itself."""
    return user.is_authenticated and AdapterRecord.objects.filter(adapter=adapter, record__contributor=user).exists()


def get_receipt_adapter_for_user(user, slug: str, version: int) -> Adapter:
    """The adapter whose receipt this user may open, or the same 404 for missing and forbidden."""
    adapter = Adapter.objects.select_related("job", "team").filter(slug=slug, version=version).first()
    if adapter is None or not can_view_receipt(user, adapter):
        raise Http404("No such receipt.")
    return adapter


def datanets_named_for_user(user, adapter: Adapter | FineTuneJob) -> list[int]:
    """The adapter's (or fine-tune job's) Datanets whose contributors this user sees by name, not pseudonym:
    all of them for staff, those they curate for curators, none for anyone else."""
    if not user.is_authenticated:
        return []
    datanets = {v.datanet_id: v.datanet for v in adapter.datanet_versions.select_related("datanet")}
    return [pk for pk, datanet in datanets.items() if user.is_staff or datanet_policy.can_curate_datanet(user, datanet)]
