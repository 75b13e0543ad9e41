from django.urls import path

from . import views

urlpatterns = [
    path("adapters/", views.adapter_list, name="adapter_list"),
    path("adapters/<slug:slug>/v<int:version>/", views.adapter_detail, name="adapter_detail"),
    path("adapters/<slug:slug>/v<int:version>/download/", views.adapter_download, name="adapter_download"),
    path("adapters/<slug:slug>/v<int:version>/exports/", views.adapter_export, name="adapter_export"),
    path(
        "adapters/<slug:slug>/v<int:version>/exports/<str:fmt>/",
        views.adapter_export_download,
        name="adapter_export_download",
    ),
    path("adapters/<slug:slug>/v<int:version>/rewards.csv", views.adapter_rewards, name="adapter_rewards"),
    path("jobs/<int:pk>/publish/", views.job_publish, name="job_publish"),
    path("publications/<int:pk>/", views.publication_detail, name="publication_detail"),
    path("publications/<int:pk>/retry/", views.publication_retry, name="publication_retry"),
    path("contributions/adapters/", views.my_adapter_contributions, name="my_adapter_contributions"),
    path("contributions/adapters/<slug:slug>/v<int:version>/", views.receipt_detail, name="receipt_detail"),
    path(
        "contributions/adapters/<slug:slug>/v<int:version>/receipt.json",
        views.receipt_download,
        name="receipt_download",
    ),
    path("account/tokens/", views.tokens, name="tokens"),
]
