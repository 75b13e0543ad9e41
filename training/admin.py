from django.contrib import admin

from .models import BaseModel


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    list_display = ("name", "architecture", "parameter_count", "context_length", "license", "status", "enabled")
    list_filter = ("status", "enabled", "architecture")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("weights_sha256", "status", "error", "created_at", "updated_at")
