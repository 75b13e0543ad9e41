"""People and team pages: thin views over accounts.services, permission from accounts.policy."""

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from modelfactory.exceptions import ApplicationError

from . import policy, services
from .forms import InviteForm, SignupForm, TeamForm


def signup(request):
    if request.user.is_authenticated:
        return redirect("dashboard")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome to ModelFactory, {user.username}.")
        return redirect("dashboard")
    return render(request, "registration/signup.html", {"form": form})


@login_required
def team_create(request):
    form = TeamForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            team = services.team_create(name=form.cleaned_data["name"], owner=request.user)
        except ApplicationError as error:
            form.add_error("name", error.message)
        else:
            messages.success(request, f"Team {team.name} created. You are its owner.")
            if request.htmx:
                return HttpResponseClientRedirect(f"/teams/{team.slug}/")
            return redirect("team_detail", slug=team.slug)
    template = "accounts/team_form.html#form" if request.htmx else "accounts/team_form.html"
    return render(request, template, {"form": form})


@login_required
def team_detail(request, slug):
    team = policy.get_team_for_user(request.user, slug)
    can_manage = policy.can_manage_team(request.user, team)
    form = InviteForm(request.POST or None)
    if request.method == "POST":
        if not can_manage:
            messages.error(request, "Only the team's owners and admins invite people.")
            return redirect("team_detail", slug=team.slug)
        if form.is_valid():
            try:
                invitation = services.team_invite(
                    team=team, username=form.cleaned_data["username"], role=form.cleaned_data["role"], by=request.user
                )
            except ApplicationError as error:
                form.add_error("username", error.message)
            else:
                messages.success(request, f"Invited {invitation.user.username} as {invitation.get_role_display()}.")
                return redirect("team_detail", slug=team.slug)
    memberships = team.memberships.select_related("user").order_by("user__username")
    page = Paginator(memberships, 25).get_page(request.GET.get("page"))
    pending = team.invitations.filter(status="pending").select_related("user") if can_manage else []
    return render(
        request,
        "accounts/team_detail.html",
        {"team": team, "page": page, "form": form, "can_manage": can_manage, "pending": pending},
    )


@login_required
@require_POST
def invitation_answer(request, pk):
    invitation = policy.get_invitation_for_user(request.user, pk)
    accept = request.POST.get("answer") == "accept"
    try:
        services.invitation_answer(invitation=invitation, accept=accept, by=request.user)
    except ApplicationError as error:
        messages.error(request, error.message)
        return redirect("dashboard")
    if accept:
        messages.success(request, f"You joined {invitation.team.name}.")
        return redirect("team_detail", slug=invitation.team.slug)
    messages.info(request, f"You declined the invitation to {invitation.team.name}.")
    return redirect("dashboard")
