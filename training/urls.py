from django.urls import path

from . import views

urlpatterns = [
    path("base-models/", views.base_model_list, name="base_model_list"),
    path("train/", views.wizard_view, name="wizard_start"),
    path("train/step/<int:step>/", views.wizard_view, name="wizard"),
    path("jobs/", views.job_list, name="job_list"),
    path("jobs/<int:pk>/", views.job_detail, name="job_detail"),
    path("jobs/<int:pk>/cancel/", views.job_cancel, name="job_cancel"),
    path("jobs/<int:pk>/retry/", views.job_retry, name="job_retry"),
]
