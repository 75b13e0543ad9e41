from django.urls import path

from . import views

urlpatterns = [path("base-models/", views.base_model_list, name="base_model_list")]
