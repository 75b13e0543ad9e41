"""Datanet pages: thin views; services do the work, datanets.policy decides who may."""

import csv

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling

from accounts import policy as team_policy
from modelfactory.exceptions import ApplicationError

from . import policy, selectors, services
from .forms import (
    RECORD_FORMS,
    AccessDecisionForm,
    AccessRequestForm,
    DatanetForm,
    ModerationForm,
    PublishForm,
    UploadForm,
)
from .models import AccessRequest, Record


def datanet_list(request):
    datanets = policy.visible_datanets(request.user).select_related("team")
    query, tag = request.GET.get("q", "").strip(), request.GET.get("tag", "").strip()
    if query:
        datanets = datanets.filter(Q(name__icontains=query) | Q(description__icontains=query))
    if tag:
        datanets = datanets.filter(domain_tags__icontains=tag)
    datanets = datanets.annotate(approved=Count("records", filter=Q(records__status="approved"))).order_by("name")
    page = Paginator(datanets, 20).get_page(request.GET.get("page"))
    return render(request, "datanets/datanet_list.html", {"page": page, "q": query, "tag": tag})


@login_required
def datanet_create(request):
    teams = team_policy.teams_managed_by(request.user)
    form = DatanetForm(request.POST or None, teams=teams)
    if request.method == "POST" and form.is_valid():
        fields = {k: v for k, v in form.cleaned_data.items() if k not in {"team", "name"}}
        try:
            datanet = services.datanet_create(
                by=request.user, team=form.cleaned_data["team"], name=form.cleaned_data["name"], **fields
            )
        except ApplicationError as error:
            form.add_error(None, error.message)
        else:
            messages.success(request, f"Datanet {datanet.name} created.")
            return redirect("datanet_detail", slug=datanet.slug)
    return render(request, "datanets/datanet_form.html", {"form": form, "has_team": teams.exists()})


def datanet_detail(request, slug):
    datanet = policy.get_datanet_for_user(request.user, slug)
    user = request.user
    counts = datanet.records.aggregate(
        approved=Count("id", filter=Q(status="approved")), pending=Count("id", filter=Q(status="pending"))
    )
    can_curate = policy.can_curate_datanet(user, datanet)
    context = {
        "datanet": datanet,
        "counts": counts,
        "versions": datanet.versions.order_by("-number")[:20],
        "can_curate": can_curate,
        "can_contribute": policy.can_contribute(user, datanet),
        "can_train": policy.can_train_on(user, datanet),
        "curators": datanet.curators.all(),
    }
    if policy.can_request_access(user, datanet):
        teams = team_policy.teams_for_user(user)
        context["access_form"] = AccessRequestForm(teams=teams)
        context["my_requests"] = AccessRequest.objects.filter(datanet=datanet, team__in=teams).select_related("team")
    if can_curate:
        context["publish_form"] = PublishForm()
        context["access_requests"] = datanet.access_requests.filter(status="pending").select_related(
            "team", "requested_by"
        )
    return render(request, "datanets/datanet_detail.html", context)


@login_required
def datanet_contribute(request, slug):
    datanet = policy.get_datanet_for_user(request.user, slug)
    if not policy.can_contribute(request.user, datanet):
        raise Http404("No such Datanet.")
    RecordForm = RECORD_FORMS[datanet.schema]
    kind = request.POST.get("kind")
    refused = getattr(request, "upload_refused", None)  # the file grew past the limit: it was not read further
    if refused:
        kind = "upload"
    upload_form = UploadForm(request.POST if kind == "upload" else None, request.FILES if kind == "upload" else None)
    if refused:
        upload_form.add_error("file", refused)
    record_form = RecordForm(request.POST if kind == "record" else None)
    if kind == "upload" and upload_form.is_valid():
        try:
            upload = services.upload_create(
                datanet=datanet, contributor=request.user, file=upload_form.cleaned_data["file"]
            )
        except ApplicationError as error:
            upload_form.add_error("file", error.message)
        else:
            return redirect("upload_detail", pk=upload.pk)
    if kind == "record" and record_form.is_valid():
        try:
            services.record_create(datanet=datanet, contributor=request.user, value=record_form.value())
        except ApplicationError as error:
            record_form.add_error(None, error.message)
        else:
            messages.success(request, "Record added; it waits for a curator's review.")
            return redirect("datanet_contribute", slug=datanet.slug)
    return render(
        request,
        "datanets/contribute.html",
        {"datanet": datanet, "upload_form": upload_form, "record_form": record_form},
    )


@login_required
def upload_detail(request, pk):
    upload = policy.get_upload_for_user(request.user, pk)
    context = {"upload": upload, "live": services.upload_live(upload)}
    if request.htmx and request.GET.get("poll"):
        response = render(request, "datanets/upload_detail.html#progress", context)
        if upload.finished:
            # Stop polling and let the page reload once to show the final report.
            response = HttpResponseStopPolling(response.content)
            response["HX-Refresh"] = "true"
        return response
    return render(request, "datanets/upload_detail.html", context)


@login_required
@require_POST
def upload_cancel(request, pk):
    upload = policy.get_upload_for_user(request.user, pk)
    try:
        services.upload_cancel(upload=upload, by=request.user)
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.info(request, "Cancelling: nothing from this upload will be stored.")
    return redirect("upload_detail", pk=upload.pk)


@login_required
def upload_report(request, pk):
    upload = policy.get_upload_for_user(request.user, pk)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="upload-{upload.pk}-rejected-lines.csv"'
    writer = csv.writer(response)
    writer.writerow(["line", "reason"])
    for error in upload.errors:
        writer.writerow([error["line"], services.csv_safe(error["reason"])])
    return response


def _page_query(request, **cursor) -> str:
    """The page's query string with its filters kept and its page cursor replaced."""
    query = request.GET.copy()
    for name in ("after", "before", "page", "confirm"):
        query.pop(name, None)
    query.update(cursor)
    return query.urlencode()


def _moderate_selected(request, form) -> None:
    """Approve or reject the records ticked on the page; say what was decided and what was skipped."""
    if not form.is_valid():
        for error in form.errors.values():
            messages.error(request, " ".join(error))
        return
    approve = form.cleaned_data["action"] == "approve"
    try:
        decided, skipped = services.records_moderate(
            records_qs=Record.objects.filter(pk__in=[r.pk for r in form.cleaned_data["records"]]),
            by=request.user,
            approve=approve,
            reason=form.cleaned_data["reason"] or request.POST.get("saved_reason", ""),
        )
    except ApplicationError as error:
        messages.error(request, error.message)
        return
    messages.success(request, f"{decided} record(s) {'approved' if approve else 'rejected'}.")
    for reason in skipped:
        messages.warning(request, f"Skipped {reason}.")


def _approve_matching(request, queue) -> None:
    expected = request.POST.get("expected", "")
    try:
        decided, _ = services.records_approve_matching(
            queue=queue, by=request.user, expected=int(expected) if expected.isdigit() else -1
        )
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"{decided} record(s) approved.")


@login_required
def moderation(request):
    datanets = list(policy.curated_datanets(request.user))
    slug = request.GET.get("datanet")
    datanet = next((d for d in datanets if d.slug == slug), None) if slug else None
    filters = {
        "flag": request.GET.get("flag", ""),
        "contributor": request.GET.get("contributor", "").strip(),
        "status": request.GET.get("status", "pending"),
    }
    queue = selectors.moderation_queue(datanets=datanets, datanet=datanet, **filters)
    pending = filters["status"] == "pending"
    if request.method == "POST":
        if pending and request.POST.get("action") == "approve_matching":
            _approve_matching(request, queue)
        else:
            _moderate_selected(
                request, ModerationForm(request.POST, queryset=queue if pending else Record.objects.none())
            )
        query = request.GET.copy()
        query.pop("confirm", None)
        return redirect(f"{request.path}?{query.urlencode()}")
    size = selectors.page_size(request.GET.get("size"))
    page = selectors.keyset_page(
        queue,
        after=request.GET.get("after"),
        before=request.GET.get("before"),
        number=request.GET.get("page"),
        per_page=size,
    )
    confirm = pending and request.GET.get("confirm") == "approve_matching"
    return render(
        request,
        "datanets/moderation.html",
        {
            "page": page,
            "first_query": _page_query(request),
            "next_query": _page_query(request, after=page.after, page=page.number + 1) if page.after else None,
            "previous_query": _page_query(request, before=page.before, page=page.number - 1) if page.before else None,
            "confirm_query": _page_query(request, confirm="approve_matching"),
            "rows": [
                (record, pieces, selectors.preference_sides(record, pieces))
                for record in page.rows
                for pieces in [selectors.highlighted(record)]
            ],
            "datanets": datanets,
            "datanet": datanet or (datanets[0] if len(datanets) == 1 else None),
            "filters": filters,
            "size": size,
            "sizes": selectors.PAGE_SIZES,
            "matching": queue.exclude(contributor=request.user).count() if confirm else None,
            "reasons": selectors.rejection_reasons(datanets=datanets, datanet=datanet),
            "flag_kinds": ["any", "email", "phone", "card_number", "iban", "secret", "near_duplicate"],
        },
    )


@login_required
def my_contributions(request):
    summary = selectors.contributions_by_datanet(request.user)
    records = Record.objects.filter(contributor=request.user).select_related("datanet", "reviewed_by").order_by("-id")
    if request.GET.get("datanet"):
        records = records.filter(datanet__slug=request.GET["datanet"])
    if request.GET.get("status"):
        records = records.filter(status=request.GET["status"])
    page = Paginator(records, 25).get_page(request.GET.get("page"))
    uploads = request.user.uploads.select_related("datanet")[:10]
    return render(request, "datanets/contributions.html", {"summary": summary, "page": page, "uploads": uploads})


@login_required
@require_POST
def record_withdraw(request, pk):
    record = Record.objects.filter(pk=pk, contributor=request.user).first()
    if record is None:
        raise Http404("No such record.")
    try:
        services.record_withdraw(record=record, by=request.user)
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, "Record withdrawn.")
    return redirect("my_contributions")


@login_required
@require_POST
def version_publish(request, slug):
    datanet = policy.get_datanet_for_user(request.user, slug)
    form = PublishForm(request.POST)
    form.is_valid()
    try:
        version = services.version_publish(datanet=datanet, by=request.user, notes=form.cleaned_data.get("notes", ""))
    except ApplicationError as error:
        messages.error(request, error.message)
        return redirect("datanet_detail", slug=datanet.slug)
    messages.success(request, f"Published version {version.number}: {version.record_count} records.")
    return redirect("version_detail", slug=datanet.slug, number=version.number)


def version_detail(request, slug, number):
    version = policy.get_version_for_user(request.user, slug, number)
    return render(
        request,
        "datanets/version_detail.html",
        {
            "version": version,
            "datanet": version.datanet,
            "can_export": policy.can_export_datanet(request.user, version.datanet),
            "can_train": policy.can_train_on(request.user, version.datanet),
        },
    )


@login_required
def version_export(request, slug, number):
    version = policy.get_version_for_user(request.user, slug, number, export=True)
    response = StreamingHttpResponse(services.version_export_public_lines(version), content_type="application/jsonl")
    response["Content-Disposition"] = f'attachment; filename="{version.datanet.slug}-v{version.number}.jsonl"'
    return response


@login_required
@require_POST
def access_request(request, slug):
    datanet = policy.get_datanet_for_user(request.user, slug)
    form = AccessRequestForm(request.POST, teams=team_policy.teams_for_user(request.user))
    if form.is_valid():
        try:
            services.access_request_create(
                datanet=datanet, team=form.cleaned_data["team"], by=request.user, message=form.cleaned_data["message"]
            )
        except ApplicationError as error:
            messages.error(request, error.message)
        else:
            messages.success(request, "Access requested; a curator will decide.")
    else:
        messages.error(request, "Pick one of your teams.")
    return redirect("datanet_detail", slug=datanet.slug)


@login_required
@require_POST
def access_decide(request, pk):
    access = AccessRequest.objects.select_related("datanet", "team").filter(pk=pk).first()
    if access is None or not policy.can_curate_datanet(request.user, access.datanet):
        raise Http404("No such request.")
    form = AccessDecisionForm(request.POST)
    if form.is_valid():
        grant = form.cleaned_data["decision"] == "grant"
        try:
            services.access_request_decide(
                request=access, by=request.user, grant=grant, message=form.cleaned_data["message"]
            )
        except ApplicationError as error:
            messages.error(request, error.message)
        else:
            messages.success(request, f"Access {'granted to' if grant else 'denied for'} {access.team.name}.")
    return redirect(reverse("datanet_detail", args=[access.datanet.slug]))
