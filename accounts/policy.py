"""Who may do what with people and teams. Every view asks here; nowhere else decides."""

from django.http import Http404

from .models import Invitation, Membership, Team

MANAGER_ROLES = {Membership.Role.OWNER, Membership.Role.ADMIN}


def role_in_team(user, team: Team) -> str | None:
    if not user.is_authenticated:
        return None
    membership = Membership.objects.filter(team=team, user=user).only("role").first()
    return membership.role if membership else None


def can_view_team(user, team: Team) -> bool:
    return user.is_authenticated and (user.is_staff or role_in_team(user, team) is not None)


def can_manage_team(user, team: Team) -> bool:
    """Invite people and change roles: team owners and admins, and site staff."""
    return user.is_authenticated and (user.is_staff or role_in_team(user, team) in MANAGER_ROLES)


def can_grant_role(user, team: Team, role: str) -> bool:
    """Only an owner (or staff) makes another owner."""
    if not can_manage_team(user, team):
        return False
    return role != Membership.Role.OWNER or user.is_staff or role_in_team(user, team) == Membership.Role.OWNER


def get_team_for_user(user, slug: str) -> Team:
    """The team, or the same 404 whether it is missing or the user may not see it."""
    team = Team.objects.filter(slug=slug).first()
    if team is None or not can_view_team(user, team):
        raise Http404("No such team.")
    return team


def get_invitation_for_user(user, pk: int) -> Invitation:
    invitation = Invitation.objects.select_related("team").filter(pk=pk, user_id=user.pk).first()
    if invitation is None:
        raise Http404("No such invitation.")
    return invitation


def teams_managed_by(user):
    """The teams this user manages (all of them for site staff)."""
    if not user.is_authenticated:
        return Team.objects.none()
    if user.is_staff:
        return Team.objects.all()
    return Team.objects.filter(memberships__user=user, memberships__role__in=MANAGER_ROLES)


def teams_for_user(user):
    if not user.is_authenticated:
        return Team.objects.none()
    return Team.objects.filter(memberships__user=user)
