"""Site-wide pages: home, dashboard, health."""

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache

from accounts import policy
from datanets import selectors as datanet_selectors
from publishing import receipts
from training.models import BaseModel

from . import health
from . import policy as site_policy


def home(request):
    if request.user.is_authenticated:
        return redirect("dashboard")
    return render(request, "home.html")


@login_required
def dashboard(request):
    teams = policy.teams_for_user(request.user).order_by("name")
    invitations = request.user.invitations.filter(status="pending").select_related("team", "invited_by")
    base_models = BaseModel.objects.filter(enabled=True, status=BaseModel.Status.READY)
    return render(
        request,
        "dashboard.html",
        {
            "teams": Paginator(teams, 10).get_page(request.GET.get("page")),
            "invitations": invitations,
            "base_models": base_models,
        },
    )


@login_required
def profile(request):
    """One's own page: teams, API tokens, contributions; each list shows its first entries and links to
    its own paginated page."""
    user = request.user
    return render(
        request,
        "profile.html",
        {
            "teams": Paginator(policy.teams_for_user(user).order_by("name"), 10).get_page(request.GET.get("page")),
            "tokens": user.api_tokens.select_related("team").filter(revoked_at__isnull=True)[:10],
            "contributions": datanet_selectors.contributions_by_datanet(user)[:10],
            "adapters": receipts.receipt_adapters(user)[:10],
        },
    )


@never_cache
def healthz(request):
    healthy, results = health.run_checks()
    if not site_policy.can_view_health_detail(request.user):
        results = {name: {"status": result["status"]} for name, result in results.items()}
    return JsonResponse({"status": "ok" if healthy else "down", "checks": results}, status=200 if healthy else 503)
