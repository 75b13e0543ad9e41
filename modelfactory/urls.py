from django.contrib import admin
from django.urls import include, path

from ftapi.api import api as v1_api
from publishing.api import api

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("account/", views.profile, name="profile"),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("", include("accounts.urls")),
    path("", include("training.urls")),
    path("", include("datanets.urls")),
    path("", include("publishing.urls")),
    path("", include("serving.urls")),
    path("api/v1/", api.urls),
    path("v1/", v1_api.urls),  # files and fine-tuning jobs; /v1/models and chat are serving's
]
