"""Adapter catalogue, adapter pages, browser downloads, publishing a job and its progress, API tokens."""

import csv
from collections import Counter
from decimal import Decimal, InvalidOperation

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling

from accounts import contributors
from accounts.models import Team
from datanets.services import csv_safe
from modelfactory.exceptions import ApplicationError
from training import policy as training_policy
from training.models import BaseModel

from . import cards, exports, policy, receipts, selectors, services
from .models import Adapter, AdapterExport, ApiToken


def adapter_list(request):
    filters = {k: request.GET.get(k, "").strip() for k in ("q", "base_model", "datanet", "domain")}
    adapters = selectors.adapter_search(policy.visible_adapters(request.user).order_by("slug", "-version"), **filters)
    page = Paginator(adapters, 20).get_page(request.GET.get("page"))
    base_models = BaseModel.objects.filter(adapters__isnull=False).distinct().values_list("name", flat=True)
    return render(
        request, "publishing/adapter_list.html", {"page": page, "filters": request.GET, "base_models": base_models}
    )


def _export_context(request, adapter) -> dict:
    can_export = policy.can_export_adapter(request.user, adapter)
    export = AdapterExport.objects.filter(adapter=adapter).first() if can_export else None
    formats = [
        {"format": fmt, "label": label, **(export.files.get(fmt, {}) if export else {})}
        for fmt, label in AdapterExport.FORMATS.items()
    ]
    return {"adapter": adapter, "export": export, "can_export": can_export, "export_formats": formats}


def adapter_detail(request, slug, version):
    adapter = policy.get_adapter_for_user(request.user, slug, version)
    if request.htmx and request.GET.get("poll") == "exports":
        context = _export_context(request, adapter)
        response = render(request, "publishing/adapter_detail.html#exports", context)
        if context["export"] is None or context["export"].finished:
            response = HttpResponseStopPolling(response.content)
        return response
    zip_file = f"{adapter.slug}-v{adapter.version}.zip"
    card_meta, card_html = cards.render_card(services.adapter_card(adapter))
    names = selectors.adapter_contributor_names(adapter, policy.datanets_named_for_user(request.user, adapter))
    contributors = [{**row, "name": names.get(row["id"])} for row in selectors.adapter_contributor_rows(adapter)]
    return render(
        request,
        "publishing/adapter_detail.html",
        {
            "adapter": adapter,
            "card_meta": card_meta,
            "card_html": mark_safe(card_html),  # markdown-it with HTML off escapes it (cards.py)
            "contributors": contributors[:50],
            "more_contributors": max(0, len(contributors) - 50),
            "zip_file": zip_file,
            "versions": Adapter.objects.filter(slug=slug).order_by("-version").values_list("version", flat=True),
            "can_download": policy.can_download_adapter(request.user, adapter),
            "influence": adapter.manifest.get("influence"),
            "can_split_rewards": policy.can_split_rewards(request.user, adapter),
            "api_url": request.build_absolute_uri(
                f"/api/v1/adapters/{adapter.slug}/versions/{adapter.version}/download"
            ),
            **_export_context(request, adapter),
        },
    )


@login_required
def adapter_rewards(request, slug, version):
    """A CSV of payouts for an amount, split by influence share."""
    adapter = policy.get_adapter_for_user(request.user, slug, version)
    if not policy.can_split_rewards(request.user, adapter):
        raise Http404("No such adapter.")
    try:
        rows = services.reward_split(adapter=adapter, amount=Decimal(request.GET.get("amount", "").strip() or "0"))
    except (ApplicationError, InvalidOperation) as error:
        messages.error(request, getattr(error, "message", "Enter an amount such as 1000.00."))
        return redirect("adapter_detail", slug=slug, version=version)
    response = HttpResponse(content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{adapter.slug}-v{adapter.version}-rewards.csv"'
    writer = csv.writer(response)
    writer.writerow(["contributor", "username", "influence_share", "payout"])
    for row in rows:
        writer.writerow([row["contributor"], csv_safe(row["username"]), f"{row['share']:.6f}", f"{row['payout']}"])
    return response


@login_required
def adapter_download(request, slug, version):
    adapter = policy.get_adapter_for_user(request.user, slug, version)
    if not policy.can_download_adapter(request.user, adapter):
        raise Http404("No such adapter.")
    handle = services.adapter_download_counted(adapter=adapter)
    return FileResponse(handle, as_attachment=True, filename=f"{adapter.slug}-v{adapter.version}.zip")


@login_required
@require_POST
def adapter_export(request, slug, version):
    """Have the version's exports built (or built again after a failure); the adapter page follows them."""
    adapter = policy.get_adapter_for_user(request.user, slug, version)
    if not policy.can_export_adapter(request.user, adapter):
        raise Http404("No such adapter.")
    try:
        exports.export_request(adapter=adapter, by=request.user)
    except ApplicationError as error:
        messages.error(request, error.message)
    return redirect(reverse("adapter_detail", args=[slug, version]) + "#exports")


@login_required
def adapter_export_download(request, slug, version, fmt):
    adapter = policy.get_adapter_for_user(request.user, slug, version)
    export = AdapterExport.objects.filter(adapter=adapter).first()
    if not policy.can_export_adapter(request.user, adapter) or export is None or fmt not in export.files:
        raise Http404("No such export.")
    try:
        handle, filename = exports.export_file_open(export=export, fmt=fmt)
    except ApplicationError:
        raise Http404("No such export.") from None
    return FileResponse(handle, as_attachment=True, filename=filename)


class PublishForm(forms.Form):
    name = forms.CharField(max_length=200)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)
    domain = forms.CharField(max_length=100, required=False)
    visibility = forms.ChoiceField(
        choices=Adapter.Visibility.choices,
        help_text="Its team: only the team's members (and site staff) see, download and chat with it; the "
        "contributors whose data trained it and everyone else do not, though each contributor can open a "
        "receipt of their own records in it. Public: anyone sees it, and anyone signed in downloads it.",
    )

    def __init__(self, *args, teams=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"] = forms.ModelChoiceField(queryset=teams)


@login_required
def job_publish(request, pk):
    job = training_policy.get_job_for_user(request.user, pk)
    teams = Team.objects.all() if request.user.is_staff else Team.objects.filter(memberships__user=request.user)
    form = PublishForm(request.POST or None, teams=teams, initial={"name": job.name})
    if request.method == "POST" and form.is_valid():
        try:
            publication = services.publication_request(job=job, by=request.user, **form.cleaned_data)
        except ApplicationError as error:
            form.add_error(None, error.message)
        else:
            return redirect("publication_detail", pk=publication.pk)
    return render(request, "publishing/publish.html", {"form": form, "job": job})


@login_required
def publication_detail(request, pk):
    """A publication's progress, live while it runs (htmx polling), then its adapter or what went wrong."""
    publication = policy.get_publication_for_user(request.user, pk)
    context = {"publication": publication, "job": publication.job}
    if request.htmx and request.GET.get("poll"):
        response = render(request, "publishing/publication.html#live", context)
        if publication.finished:
            response = HttpResponseStopPolling(response.content)
            response["HX-Refresh"] = "true"
        return response
    return render(request, "publishing/publication.html", context)


@login_required
@require_POST
def publication_retry(request, pk):
    publication = policy.get_publication_for_user(request.user, pk)
    try:
        services.publication_retry(publication=publication, by=request.user)
    except ApplicationError as error:
        messages.error(request, error.message)
    return redirect("publication_detail", pk=publication.pk)


@login_required
def my_adapter_contributions(request):
    if request.method == "POST":
        show = request.POST.get("show_handle") == "on"
        contributors.contributor_preference_set(user=request.user, show_handle=show)
        messages.success(
            request,
            "Future manifests name you by your username." if show else "Future manifests name you by your pseudonym.",
        )
        return redirect("my_adapter_contributions")
    page = Paginator(receipts.receipt_adapters(request.user), 20).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "rows": selectors.contributions_in_adapters(request.user, page),
        "show_handle": contributors.contributor_shows_handle(request.user),
    }
    return render(request, "publishing/my_attribution.html", context)


def _receipt(request, slug, version):
    """The adapter and the user's receipt for it, or None after saying why there is none."""
    adapter = policy.get_receipt_adapter_for_user(request.user, slug, version)
    try:
        return adapter, receipts.contributor_receipt(adapter=adapter, contributor=request.user)
    except ApplicationError as error:
        messages.error(request, error.message)
        return None


@login_required
def receipt_detail(request, slug, version):
    """A contributor's receipt for one adapter, whether or not they may see the adapter itself."""
    found = _receipt(request, slug, version)
    if found is None:
        return redirect("my_adapter_contributions")
    adapter, receipt = found
    context = {
        "adapter": adapter,
        "receipt": receipt,
        "page": Paginator(receipt["records"], 50).get_page(request.GET.get("page")),
        "uses": Counter(row["use"] for row in receipt["records"]),
        "can_view_adapter": policy.can_view_adapter(request.user, adapter),
    }
    return render(request, "publishing/receipt.html", context)


@login_required
def receipt_download(request, slug, version):
    found = _receipt(request, slug, version)
    if found is None:
        return redirect("my_adapter_contributions")
    adapter, receipt = found
    response = JsonResponse(receipt, json_dumps_params={"indent": 1, "ensure_ascii": False})
    response["Content-Disposition"] = f'attachment; filename="{adapter.slug}-v{adapter.version}-receipt.json"'
    return response


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100)
    scope = forms.ChoiceField(choices=ApiToken.Scope.choices)

    def __init__(self, *args, teams=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"] = forms.ModelChoiceField(
            queryset=teams, required=False, help_text="Empty: a personal token"
        )


@login_required
def tokens(request):
    teams = Team.objects.filter(memberships__user=request.user)
    # Download scope by default: README's first example downloads an adapter.
    form = TokenForm(request.POST or None, teams=teams, initial={"scope": ApiToken.Scope.DOWNLOAD})
    secret, created = None, None
    if request.method == "POST" and request.POST.get("revoke"):
        token = ApiToken.objects.filter(pk=request.POST["revoke"], user=request.user).first()
        if token is None:
            raise Http404("No such token.")
        services.token_revoke(token=token, by=request.user)
        messages.success(request, f"Token {token.name} revoked.")
        return redirect("tokens")
    if request.method == "POST" and form.is_valid():
        try:
            created, secret = services.token_create(user=request.user, **form.cleaned_data)
        except ApplicationError as error:
            form.add_error(None, error.message)
        else:
            form = TokenForm(teams=teams, initial={"scope": ApiToken.Scope.DOWNLOAD})
    page = Paginator(request.user.api_tokens.select_related("team"), 20).get_page(request.GET.get("page"))
    context = {"form": form, "secret": secret, "created": created, "page": page}
    if secret:
        example = policy.visible_adapters(request.user).order_by("-created_at").first()
        context.update(base_url=request.build_absolute_uri("/").rstrip("/"), example=example)
    return render(request, "publishing/tokens.html", context)
