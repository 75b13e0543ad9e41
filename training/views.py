"""Base-model catalogue, the fine-tune wizard and job pages. Thin views over training.jobs."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling

from modelfactory.exceptions import ApplicationError

from . import charts, display, jobs, objectives, policy, presets, selectors, wizard
from .forms import BaseModelForm, LaunchForm, MethodForm, VersionsForm
from .models import BaseModel, FineTuneJob

STEPS = {1: "Datanets", 2: "Base model", 3: "Method", 4: "Review"}


@login_required
def base_model_list(request):
    models = BaseModel.objects.filter(enabled=True).order_by("name")
    page = Paginator(models, 20).get_page(request.GET.get("page"))
    return render(request, "training/base_model_list.html", {"page": page})


def _wizard_form(request, step: int, state: dict, versions_qs, models_qs):
    data = request.POST or None
    if step == 1:
        requested = request.GET.get("version", "")  # from a version's "Train on this version"
        chosen = [int(requested)] if requested.isdigit() else state.get("versions", [])
        return VersionsForm(data, queryset=versions_qs, initial={"versions": chosen})
    if step == 2:
        initial = state.get("base_model") or wizard.only_model(models_qs)
        return BaseModelForm(data, queryset=models_qs, initial={"base_model": initial})
    if step == 3:
        initial = {
            "method": state.get("method", "auto"),
            "preset": state.get("preset", presets.DEFAULT),
            **state.get("advanced", {}),
        }
        for name in ("target_modules", "influence_methods"):  # lists in the config, one text in the form
            if isinstance(initial.get(name), list):
                initial[name] = ",".join(initial[name])
        chosen = versions_qs.filter(pk__in=state["versions"])
        if "objective" not in initial and chosen and all(v.datanet.schema == "preference" for v in chosen):
            initial["objective"] = "dpo"  # preference pairs train with a preference objective
        records = sum(v.record_count for v in chosen)
        values = wizard.preset_values(method=initial["method"], records=records)
        return MethodForm(data, initial=initial, preset_values=values)
    versions = list(versions_qs.filter(pk__in=state["versions"]))
    base_model = models_qs.filter(pk=state["base_model"]).first()
    default = (
        jobs.job_default_name(owner=request.user, base_model=base_model, versions=versions, preset=state["preset"])
        if base_model and versions
        else ""
    )
    return LaunchForm(data, initial={"name": state.get("name", "")}, default_name=default)


def _wizard_save(request, step: int, form, state: dict, versions_qs, models_qs) -> None:
    """Keep a valid step's choices in the wizard's state; settings that do not work become a form error."""
    if step == 1:
        state["versions"] = [v.pk for v in form.cleaned_data["versions"]]
    elif step == 2:
        state["base_model"] = form.cleaned_data["base_model"].pk
    elif step == 3:
        state.update(method=form.cleaned_data["method"], preset=form.cleaned_data["preset"])
        state["advanced"] = form.advanced()
        try:
            objective = state["advanced"].get("objective") or "sft"
            objectives.objective_check(objective=objective, versions=versions_qs.filter(pk__in=state["versions"]))
            objectives.full_check(
                base_model=models_qs.filter(pk=state["base_model"]).first(), method=state["method"], objective=objective
            )
            jobs.job_config(
                base_model=models_qs.filter(pk=state["base_model"]).first(),
                method=state["method"],
                preset=state["preset"],
                overrides=state["advanced"],
            )
        except ApplicationError as error:
            form.add_error(None, error.message)
    request.session["wizard"] = state


def _wizard_launch(request, form, state: dict, versions_qs, models_qs):
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
        return None
    request.session.pop("wizard", None)
    return redirect("job_detail", pk=job.pk)  # the job page says it is queued, and then what it does


@login_required
def wizard_view(request, step=1):
    if step not in STEPS:
        raise Http404("No such step.")
    state = request.session.get("wizard", {})
    include = [*state.get("versions", []), request.GET.get("version", "")]
    versions_qs, models_qs = wizard.wizard_versions(request.user, include=include), wizard.ready_models()
    for needed, key in ((2, "versions"), (3, "base_model"), (4, "method")):
        if step >= needed and not state.get(key):
            return redirect("wizard", step=needed - 1)
    if request.method == "POST" and request.POST.get("go") == "back" and step > 1:
        return redirect("wizard", step=step - 1)
    form = _wizard_form(request, step, state, versions_qs, models_qs)
    if request.method == "POST" and form.is_valid():
        _wizard_save(request, step, form, state, versions_qs, models_qs)
        if form.is_valid() and step < 4:
            return redirect("wizard", step=step + 1)
        if form.is_valid() and (launched := _wizard_launch(request, form, state, versions_qs, models_qs)):
            return launched
    context = {
        "form": form,
        "step": step,
        "steps": STEPS,
        "state": state,
        "preset_values": getattr(form, "preset_values", None),
    }
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
        config = jobs.job_config(
            base_model=base_model,
            method=state["method"],
            preset=state["preset"],
            overrides=state.get("advanced"),
            records=records,
        )
    except ApplicationError as error:
        return {"review_error": error.message}
    online, estimates = wizard.review_estimates(base_model=base_model, versions=versions, config=config)
    return {
        "base_model": base_model,
        "versions": versions,
        "config": config,
        "method_label": display.method_label(config["method"]),
        "preset_name": display.preset_name(state["preset"]),
        "estimates": estimates,
        "online": online,
        "devices_online": sum(w.get("devices", 1) >= config.get("devices", 1) for w in online)
        >= config.get("nodes", 1),
        "licence_warnings": jobs.licence_conflicts(versions),
    }


@login_required
def job_list(request):
    jobs_qs = selectors.jobs_listed(policy.jobs_for_user(request.user).order_by("-created_at"))
    page = Paginator(jobs_qs, 20).get_page(request.GET.get("page"))
    for job in page:
        job.method_label, job.preset_name = display.method_label(job.method), display.preset_name(job.preset)
    return render(request, "training/job_list.html", {"page": page})


@login_required
def job_detail(request, pk):
    job = policy.get_job_for_user(request.user, pk)
    metrics = job.metrics or {}
    context = {
        "job": job,
        "position": jobs.queue_position(job),
        "phase": display.PHASES.get(metrics.get("phase", "")),
        "chart": charts.loss_chart(metrics),
        "last": metrics.get("last", {}),
        "attribution": metrics.get("attribution") if job.status == FineTuneJob.Status.ATTRIBUTING else None,
    }
    if request.htmx and request.GET.get("poll"):
        response = render(request, "training/job_detail.html#live", context)
        if job.finished:
            response = HttpResponseStopPolling(response.content)
            response["HX-Refresh"] = "true"
        return response
    context.update(
        influence=selectors.job_influence_summary(job, request.user),
        settings=display.settings_rows(job.config, wizard.trainer_defaults()),
        method_label=display.method_label(job.method),
        preset_name=display.preset_name(job.preset),
        evaluation_method=display.method_label((job.evaluation or {}).get("method", "")),
    )
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
