from django.contrib import admin

from .models import AccessRequest, Datanet, DatanetVersion, LedgerEntry, Record, RejectionReason, Upload


@admin.register(Datanet)
class DatanetAdmin(admin.ModelAdmin):
    list_display = ("name", "team", "schema", "license", "visibility", "created_at")
    list_filter = ("schema", "visibility", "license")
    search_fields = ("name", "slug", "domain_tags")
    filter_horizontal = ("curators",)
    raw_id_fields = ("team", "created_by")


@admin.register(Record)
class RecordAdmin(admin.ModelAdmin):
    list_display = ("id", "datanet", "contributor", "status", "flag_kinds", "created_at")
    list_filter = ("status", "datanet")
    search_fields = ("content_hash", "content")
    raw_id_fields = ("datanet", "contributor", "upload", "reviewed_by", "near_duplicate_of")
    readonly_fields = ("content_hash",)


@admin.register(Upload)
class UploadAdmin(admin.ModelAdmin):
    list_display = ("filename", "datanet", "contributor", "status", "records_added", "error_count", "created_at")
    list_filter = ("status",)
    raw_id_fields = ("datanet", "contributor")


@admin.register(DatanetVersion)
class DatanetVersionAdmin(admin.ModelAdmin):
    list_display = ("datanet", "number", "record_count", "token_count", "merkle_root", "created_at")
    exclude = ("records",)

    def has_change_permission(self, request, obj=None):
        return False  # versions never change


admin.site.register(RejectionReason)


@admin.register(AccessRequest)
class AccessRequestAdmin(admin.ModelAdmin):
    list_display = ("datanet", "team", "status", "requested_by", "decided_by", "created_at")
    list_filter = ("status",)


@admin.register(LedgerEntry)
class LedgerEntryAdmin(admin.ModelAdmin):
    list_display = ("sequence", "event", "actor", "created_at", "hash")
    list_filter = ("event",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
