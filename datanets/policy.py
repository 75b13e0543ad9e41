"""Who may see, contribute to, curate, export and train on a Datanet. The one place that decides:
pages, downloads, the wizard and the API all ask here."""

from django.db.models import Q
from django.http import Http404

from accounts.models import Membership
from accounts.policy import MANAGER_ROLES

from .models import AccessRequest, Datanet, Record


def _team_role(user, datanet: Datanet) -> str | None:
    if not user.is_authenticated:
        return None
    membership = Membership.objects.filter(team_id=datanet.team_id, user=user).only("role").first()
    return membership.role if membership else None


def can_view_datanet(user, datanet: Datanet) -> bool:
    if datanet.visibility != Datanet.Visibility.PRIVATE:
        return True
    if not user.is_authenticated:
        return False
    return user.is_staff or _team_role(user, datanet) is not None or datanet.curators.filter(pk=user.pk).exists()


def can_curate_datanet(user, datanet: Datanet) -> bool:
    """Moderate, publish versions, decide access requests: staff, curators, the team's owners and admins."""
    if not user.is_authenticated:
        return False
    if user.is_staff or _team_role(user, datanet) in MANAGER_ROLES:
        return True
    return datanet.curators.filter(pk=user.pk).exists()


def can_contribute(user, datanet: Datanet) -> bool:
    return user.is_authenticated and can_view_datanet(user, datanet)


def has_granted_access(user, datanet: Datanet) -> bool:
    return AccessRequest.objects.filter(
        datanet=datanet, status=AccessRequest.Status.GRANTED, team__memberships__user=user
    ).exists()


def can_train_on(user, datanet: Datanet) -> bool:
    """Train on its versions and export them: public to anyone signed in; permissioned after a grant."""
    if not user.is_authenticated:
        return False
    if datanet.visibility == Datanet.Visibility.PUBLIC:
        return True
    if user.is_staff or _team_role(user, datanet) is not None or can_curate_datanet(user, datanet):
        return True
    return datanet.visibility == Datanet.Visibility.PERMISSIONED and has_granted_access(user, datanet)


can_export_datanet = can_train_on


def can_request_access(user, datanet: Datanet) -> bool:
    return (
        user.is_authenticated
        and datanet.visibility == Datanet.Visibility.PERMISSIONED
        and not can_train_on(user, datanet)
    )


def can_moderate_record(user, record: Record) -> bool:
    """Curators moderate, but nobody approves or rejects their own records."""
    return record.contributor_id != user.pk and can_curate_datanet(user, record.datanet)


def can_edit_record_content(user, record: Record) -> bool:
    """Site staff correct a record's content (Django admin), never once a published version holds it."""
    return user.is_authenticated and user.is_staff and not record.versions.exists()


def get_datanet_for_user(user, slug: str) -> Datanet:
    """The Datanet, or the same 404 whether it is missing or hidden from this user."""
    datanet = Datanet.objects.select_related("team").filter(slug=slug).first()
    if datanet is None or not can_view_datanet(user, datanet):
        raise Http404("No such Datanet.")
    return datanet


def visible_datanets(user):
    if user.is_authenticated and user.is_staff:
        return Datanet.objects.all()
    visible = ~Q(visibility=Datanet.Visibility.PRIVATE)
    if user.is_authenticated:
        visible |= Q(team__memberships__user=user) | Q(curators=user)
    return Datanet.objects.filter(visible).distinct()


def datanets_in_team_scope(datanets, team_id: int):
    """What a team's API token reaches of ``datanets``: public ones, the team's own, permissioned ones
    granted to that team; never what its user sees through another team."""
    granted = Q(
        visibility=Datanet.Visibility.PERMISSIONED,
        access_requests__status=AccessRequest.Status.GRANTED,
        access_requests__team_id=team_id,
    )
    return datanets.filter(Q(visibility=Datanet.Visibility.PUBLIC) | Q(team_id=team_id) | granted).distinct()


def curated_datanets(user):
    if not user.is_authenticated:
        return Datanet.objects.none()
    if user.is_staff:
        return Datanet.objects.all()
    return Datanet.objects.filter(
        Q(curators=user) | Q(team__memberships__user=user, team__memberships__role__in=MANAGER_ROLES)
    ).distinct()


def trainable_datanets(user):
    """Datanets whose versions this user may train on (the wizard's first step)."""
    if not user.is_authenticated:
        return Datanet.objects.none()
    if user.is_staff:
        return Datanet.objects.all()
    return Datanet.objects.filter(
        Q(visibility=Datanet.Visibility.PUBLIC)
        | Q(team__memberships__user=user)
        | Q(curators=user)
        | Q(
            visibility=Datanet.Visibility.PERMISSIONED,
            access_requests__status=AccessRequest.Status.GRANTED,
            access_requests__team__memberships__user=user,
        )
    ).distinct()


def get_upload_for_user(user, pk: int):
    """An upload is seen by its contributor and the Datanet's curators; everyone else gets 404."""
    from .models import Upload

    upload = Upload.objects.select_related("datanet", "contributor").filter(pk=pk).first()
    if upload is None or not user.is_authenticated:
        raise Http404("No such upload.")
    if upload.contributor_id != user.pk and not can_curate_datanet(user, upload.datanet):
        raise Http404("No such upload.")
    return upload


def get_version_for_user(user, slug: str, number: int, *, export: bool = False):
    """A version of a visible Datanet; exporting it needs the right to train on it (same 404 otherwise)."""
    datanet = get_datanet_for_user(user, slug)
    version = datanet.versions.filter(number=number).first()
    if version is None or (export and not can_export_datanet(user, datanet)):
        raise Http404("No such version.")
    return version
