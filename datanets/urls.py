from django.urls import path

from . import views

urlpatterns = [
    path("datanets/", views.datanet_list, name="datanet_list"),
    path("datanets/new/", views.datanet_create, name="datanet_create"),
    path("datanets/<slug:slug>/", views.datanet_detail, name="datanet_detail"),
    path("datanets/<slug:slug>/contribute/", views.datanet_contribute, name="datanet_contribute"),
    path("datanets/<slug:slug>/access/", views.access_request, name="access_request"),
    path("datanets/<slug:slug>/versions/publish/", views.version_publish, name="version_publish"),
    path("datanets/<slug:slug>/versions/<int:number>/", views.version_detail, name="version_detail"),
    path("datanets/<slug:slug>/versions/<int:number>/export.jsonl", views.version_export, name="version_export"),
    path("uploads/<int:pk>/", views.upload_detail, name="upload_detail"),
    path("uploads/<int:pk>/cancel/", views.upload_cancel, name="upload_cancel"),
    path("uploads/<int:pk>/report.csv", views.upload_report, name="upload_report"),
    path("moderation/", views.moderation, name="moderation"),
    path("contributions/", views.my_contributions, name="my_contributions"),
    path("records/<int:pk>/withdraw/", views.record_withdraw, name="record_withdraw"),
    path("access-requests/<int:pk>/decide/", views.access_decide, name="access_decide"),
]
