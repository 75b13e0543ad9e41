"""People and team use cases."""

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from modelfactory.exceptions import ApplicationError

from . import policy
from .models import Invitation, Membership, Team

User = get_user_model()


def team_create(*, name: str, owner) -> Team:
    name = name.strip()
    base = slugify(name)
    if not base:
        raise ApplicationError("A team name needs at least one letter or digit.")
    slug, n = base, 1
    while Team.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    with transaction.atomic():
        team = Team.objects.create(name=name, slug=slug)
        Membership.objects.create(team=team, user=owner, role=Membership.Role.OWNER)
    return team


def team_invite(*, team: Team, username: str, role: str, by) -> Invitation:
    if not policy.can_grant_role(by, team, role):
        raise ApplicationError("You may not invite people to this team with that role.")
    user = User.objects.filter(username=username.strip(), is_active=True).first()
    if user is None:
        raise ApplicationError(f"There is no user named {username.strip()!r}.")
    if Membership.objects.filter(team=team, user=user).exists():
        raise ApplicationError(f"{user.username} is already a member of {team.name}.")
    try:
        with transaction.atomic():
            return Invitation.objects.create(team=team, user=user, role=role, invited_by=by)
    except IntegrityError as error:
        raise ApplicationError(f"{user.username} already has a pending invitation to {team.name}.") from error


def invitation_answer(*, invitation: Invitation, accept: bool, by) -> Invitation:
    if invitation.user_id != by.pk:
        raise ApplicationError("This invitation is for someone else.")
    if invitation.status != Invitation.Status.PENDING:
        raise ApplicationError("This invitation has already been answered.")
    with transaction.atomic():
        invitation.status = Invitation.Status.ACCEPTED if accept else Invitation.Status.DECLINED
        invitation.answered_at = timezone.now()
        invitation.save(update_fields=["status", "answered_at"])
        if accept:
            Membership.objects.get_or_create(team=invitation.team, user=by, defaults={"role": invitation.role})
    return invitation
