"""Base-model catalogue pages."""

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import render

from .models import BaseModel


@login_required
def base_model_list(request):
    models = BaseModel.objects.filter(enabled=True).order_by("name")
    page = Paginator(models, 20).get_page(request.GET.get("page"))
    return render(request, "training/base_model_list.html", {"page": page})
