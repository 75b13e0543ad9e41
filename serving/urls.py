from django.urls import path

from . import openai_api, views

urlpatterns = [
    path("adapters/<slug:slug>/v<int:version>/playground/", views.adapter_playground, name="adapter_playground"),
    path("jobs/<int:pk>/playground/", views.job_playground, name="job_playground"),
    path("playground/stream/<str:request_id>/", views.playground_stream, name="playground_stream"),
    # OpenAI-compatible, at the site root so that clients use base_url=".../v1"
    path("v1/models", openai_api.models, name="v1_models"),
    path("v1/chat/completions", openai_api.chat_completions, name="v1_chat_completions"),
]
