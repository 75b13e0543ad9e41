from pathlib import Path

from django import forms
from django.contrib import admin, messages

from . import services
from .models import BaseModel


class BaseModelAdminForm(forms.ModelForm):
    def clean_source(self):
        source = self.cleaned_data["source"].strip()
        if not Path(source).exists():
            raise forms.ValidationError(f"{source} does not exist on this machine.")
        return source


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    """What the import finds out is read-only; saving a new model (or a new source) queues its import."""

    form = BaseModelAdminForm
    list_display = ("name", "architecture", "parameter_count", "context_length", "license", "status", "enabled")
    list_filter = ("status", "enabled", "architecture")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = (
        "architecture",
        "parameter_count",
        "context_length",
        "chat_template",
        "weights_sha256",
        "local_path",
        "status",
        "error",
        "created_at",
        "updated_at",
    )
    actions = ["import_again"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        services.base_model_import_queue(base_model=obj, source_changed=change and "source" in form.changed_data)

    @admin.action(description="Import the selected models again (failed or importing ones)")
    def import_again(self, request, queryset):
        for model in queryset.exclude(status=BaseModel.Status.READY):
            services.base_model_import_queue(base_model=model, source_changed=True)
        messages.info(request, "Queued the import of every selected model that is not ready.")
