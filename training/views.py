"""Base-model catalogue, the fine-tune wizard and job pages. Thin views over training.jobs."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import OuterRef, Subquery
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling

from datanets import policy as datanet_policy
from datanets.models import DatanetVersion
from modelfactory.exceptions import ApplicationError
from publishing.services import contributor_labels

from . import charts, jobs, policy, presets, workers
from .attribution import influence_by_method
from .forms import BaseModelForm, LaunchForm, MethodForm, VersionsForm
from .models import BaseModel, FineTuneJob

STEPS = {1: "Datanets", 2: "Base model", 3: "Method", 4: "Review"}


@login_required
def base_model_list(request):
    models = BaseModel.objects.filter(enabled=True).order_by("name")
    page = Paginator(models, 20).get_page(request.GET.get("page"))
    return render(request, "training/base_model_list.html", {"page": page})


def _trainable_versions(user):
    """The latest version of every Datanet this user may train on."""
    datanets = datanet_policy.trainable_datanets(user)
    latest = DatanetVersion.objects.filter(datanet=OuterRef("datanet")).order_by("-number").values("pk")[:1]
    return (
        DatanetVersion.objects.filter(datanet__in=datanets, pk=Subquery(latest))
        .select_related("datanet")
        .order_by("datanet__name")
    )


def _ready_models():
    return BaseModel.objects.filter(enabled=True, status=BaseModel.Status.READY).order_by("name")


@login_required
def wizard(request, step=1):
    if step not in STEPS:
        raise Http404("No such step.")
    state = request.session.get("wizard", {})
    versions_qs, models_qs = _trainable_versions(request.user), _ready_models()
    back = request.POST.get("go") == "back"
    if step > 1 and not state.get("versions"):
        return redirect("wizard", step=1)
    if step > 2 and not state.get("base_model"):
        return redirect("wizard", step=2)
    if step > 3 and not state.get("method"):
        return redirect("wizard", step=3)

    if step == 1:
        form = VersionsForm(request.POST or None, queryset=versions_qs, initial={"versions": state.get("versions", [])})
    elif step == 2:
        form = BaseModelForm(request.POST or None, queryset=models_qs, initial={"base_model": state.get("base_model")})
    elif step == 3:
        initial = {
            "method": state.get("method", "auto"),
            "preset": state.get("preset", presets.DEFAULT),
            **state.get("advanced", {}),
        }
        if isinstance(initial.get("target_modules"), list):
            initial["target_modules"] = ",".join(initial["target_modules"])
        form = MethodForm(request.POST or None, initial=initial)
    else:
        form = LaunchForm(request.POST or None, initial={"name": state.get("name", "")})

    if request.method == "POST":
        if back and step > 1:
            return redirect("wizard", step=step - 1)
        if form.is_valid():
            if step == 1:
                state["versions"] = [v.pk for v in form.cleaned_data["versions"]]
            elif step == 2:
                state["base_model"] = form.cleaned_data["base_model"].pk
            elif step == 3:
                state.update(method=form.cleaned_data["method"], preset=form.cleaned_data["preset"])
                state["advanced"] = form.advanced()
                base_model = models_qs.filter(pk=state["base_model"]).first()
                try:
                    jobs.job_config(
                        base_model=base_model,
                        method=state["method"],
                        preset=state["preset"],
                        overrides=state["advanced"],
                    )
                except ApplicationError as error:
                    form.add_error(None, error.message)
            request.session["wizard"] = state
            if form.is_valid() and step < 4:
                return redirect("wizard", step=step + 1)
            if form.is_valid() and step == 4:
                try:
                    job = jobs.job_create(
                        owner=request.user,
                        name=form.cleaned_data["name"],
                        base_model=models_qs.get(pk=state["base_model"]),
                        versions=list(versions_qs.filter(pk__in=state["versions"])),
                        method=state["method"],
                        preset=state["preset"],
                        overrides=state.get("advanced"),
                    )
                except (ApplicationError, BaseModel.DoesNotExist) as error:
                    form.add_error(None, getattr(error, "message", "That base model is no longer available."))
                else:
                    request.session.pop("wizard", None)
                    messages.success(request, f"Job “{job.name}” queued.")
                    return redirect("job_detail", pk=job.pk)

    context = {"form": form, "step": step, "steps": STEPS, "state": state}
    if step == 4:
        context.update(_review(request.user, state, versions_qs, models_qs))
    return render(request, "training/wizard.html", context)


def _review(user, state, versions_qs, models_qs) -> dict:
    base_model = models_qs.filter(pk=state["base_model"]).first()
    versions = list(versions_qs.filter(pk__in=state["versions"]))
    if base_model is None or not versions:
        return {"review_error": "Some of your choices are no longer available; go back and choose again."}
    records = sum(v.record_count for v in versions)
    try:
        config = jobs.job_config(base_model=base_model, method=state["method"], preset=state["preset"],
                                 overrides=state.get("advanced"), records=records)  # fmt: skip
    except ApplicationError as error:
        return {"review_error": error.message}
    online = workers.online_gpu_workers()
    estimates = []
    for device in sorted({w.get("device", "cpu") for w in online} or {"cpu"}):
        estimate = jobs.job_estimate(
            base_model=base_model, versions=versions, config=config, device="cuda" if device == "cuda" else "cpu"
        )
        fits = [
            w for w in online if w.get("device") == device and w.get("memory_bytes", 0) >= estimate["peak_memory_bytes"]
        ]
        estimates.append({"device": device, "estimate": estimate, "fits": fits})
    return {
        "base_model": base_model,
        "versions": versions,
        "config": config,
        "estimates": estimates,
        "online": online,
        "licence_warnings": jobs.licence_conflicts(versions),
    }


@login_required
def job_list(request):
    page = Paginator(policy.jobs_for_user(request.user).order_by("-created_at"), 20).get_page(request.GET.get("page"))
    return render(request, "training/job_list.html", {"page": page})


def influence_summary(job) -> dict | None:
    """The default method's table with contributors as their manifests will name them."""
    method, data = influence_by_method(job)
    if not data:
        return None
    labels = contributor_labels([int(row["contributor"]) for row in data["contributors"]])
    rows = [{**row, "label": labels.get(int(row["contributor"]))} for row in data["contributors"][:50]]
    return {"method": method, "parameters": data["parameters"], "seconds": data["seconds"], "rows": rows}


@login_required
def job_detail(request, pk):
    job = policy.get_job_for_user(request.user, pk)
    context = {
        "job": job,
        "position": jobs.queue_position(job),
        "chart": charts.loss_chart(job.metrics),
        "last": (job.metrics or {}).get("last", {}),
        "attribution": (job.metrics or {}).get("attribution") if job.status == FineTuneJob.Status.ATTRIBUTING else None,
        "influence": influence_summary(job),
    }
    if request.htmx and request.GET.get("poll"):
        response = render(request, "training/job_detail.html#live", context)
        if job.finished:
            response = HttpResponseStopPolling(response.content)
            response["HX-Refresh"] = "true"
        return response
    return render(request, "training/job_detail.html", context)


@login_required
@require_POST
def job_cancel(request, pk):
    job = policy.get_job_for_user(request.user, pk)
    try:
        jobs.job_cancel(job=job, by=request.user)
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.info(request, "Cancelling: the run stops within seconds.")
    return redirect("job_detail", pk=job.pk)


@login_required
@require_POST
def job_retry(request, pk):
    job = policy.get_job_for_user(request.user, pk)
    try:
        jobs.job_retry(job=job, by=request.user)
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, "Queued again; it continues from its last checkpoint when there is one.")
    return redirect("job_detail", pk=job.pk)
