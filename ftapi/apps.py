from django.apps import AppConfig


class FtapiConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "ftapi"
    verbose_name = "Files and fine-tuning jobs API"
