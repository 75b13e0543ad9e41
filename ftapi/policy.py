"""Who may see and change files and fine-tune jobs through /v1/. Another team's file or job gets the
same 404 as a missing one; a team token reaches only its team's; writes need the train scope."""

from django.http import Http404

from accounts import policy as team_policy
from accounts.models import Team
from datanets import policy as datanet_policy
from datanets.models import Datanet
from publishing.models import ApiToken
from training import policy as training_policy

from .models import ApiFile


def can_write(token: ApiToken) -> bool:
    """Uploading files and starting or cancelling jobs: tokens with the train scope only."""
    return token.scope == ApiToken.Scope.TRAIN


def _is_key(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 18  # past that no 64-bit key matches


def files_for_token(token: ApiToken):
    files = ApiFile.objects.select_related("upload", "datanet", "version")
    if token.team_id:
        files = files.filter(team_id=token.team_id)
    if token.user.is_staff:
        return files
    return files.filter(team__memberships__user=token.user)


def get_file_for_token(token: ApiToken, public_id: str) -> ApiFile:
    pk = public_id.removeprefix("file-")
    found = files_for_token(token).filter(pk=int(pk)).first() if _is_key(pk) else None
    if found is None:
        raise Http404(f"No such file: {public_id}")
    return found


def can_delete_file(token: ApiToken, file: ApiFile) -> bool:
    """The uploader, or an owner or admin of the file's team."""
    return can_write(token) and (
        file.created_by_id == token.user_id or team_policy.can_manage_team(token.user, file.team)
    )


def jobs_for_token(token: ApiToken):
    """The token's owner's jobs (every job for staff), the browser's included; a team token's only those
    created through that team."""
    jobs = training_policy.jobs_for_user(token.user).select_related("api", "api__team", "owner")
    return jobs.filter(api__team_id=token.team_id) if token.team_id else jobs


def get_job_for_token(token: ApiToken, public_id: str):
    pk = public_id.removeprefix("ftjob-")
    found = jobs_for_token(token).filter(pk=int(pk)).first() if _is_key(pk) else None
    if found is None:
        raise Http404(f"No such fine-tuning job: {public_id}")
    return found


def team_for_upload(token: ApiToken, slug: str | None) -> Team:
    """The team a new file belongs to: a team token's, or the one named, or the user's only team."""
    if token.team_id:
        if slug and slug != token.team.slug:
            raise Http404(f"No such team: {slug}")
        return token.team
    teams = team_policy.teams_for_user(token.user)
    if slug:
        team = teams.filter(slug=slug).first()
        if team is None:
            raise Http404(f"No such team: {slug}")
        return team
    mine = list(teams[:2])
    if len(mine) != 1:
        raise ValueError("Name the team the file belongs to: metadata[team]=<team slug> (or use a team token).")
    return mine[0]


def get_datanet_for_upload(token: ApiToken, slug: str) -> Datanet:
    """An existing Datanet the token's owner may contribute to, within a team token's reach; else 404."""
    datanet = datanet_policy.get_datanet_for_user(token.user, slug)
    if token.team_id and not datanet_policy.datanets_in_team_scope(
        Datanet.objects.filter(pk=datanet.pk), token.team_id
    ):
        raise Http404("No such Datanet.")
    if not datanet_policy.can_contribute(token.user, datanet):
        raise Http404("No such Datanet.")
    return datanet


def can_approve_on_upload(user, datanet: Datanet) -> bool:
    """A private Datanet created for one API file: its team moderates its own private data, so the
    uploader's records are approved as they arrive (the browser's curators still see every record)."""
    return datanet.visibility == Datanet.Visibility.PRIVATE and datanet_policy.can_curate_datanet(user, datanet)
