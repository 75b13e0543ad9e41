import orjson
from django import forms
from django.contrib import admin

from modelfactory.exceptions import ApplicationError

from . import integrity
from .models import AccessRequest, Datanet, DatanetVersion, LedgerEntry, Record, RejectionReason, Upload


@admin.register(Datanet)
class DatanetAdmin(admin.ModelAdmin):
    list_display = ("name", "team", "schema", "license", "visibility", "created_at")
    list_filter = ("schema", "visibility", "license")
    search_fields = ("name", "slug", "domain_tags")
    filter_horizontal = ("curators",)
    raw_id_fields = ("team", "created_by")


class RecordAdminForm(forms.ModelForm):
    def clean_content(self):
        """Validated and normalised as an ingest would; the hash follows in save_model."""
        value = self.cleaned_data["content"]
        try:
            datanet = self.cleaned_data.get("datanet") or (self.instance.datanet if self.instance.datanet_id else None)
            if datanet is None:
                return value  # the missing Datanet is the error to show
            prepared = integrity.record_content_prepare(datanet=datanet, value=value, record_id=self.instance.pk)
        except ApplicationError as error:
            raise forms.ValidationError(error.message) from error
        return orjson.loads(prepared.contents[0])


@admin.register(Record)
class RecordAdmin(admin.ModelAdmin):
    """Content edits go through the integrity service (new hash, ledger entry); a record that a published
    version holds is read-only and cannot be deleted."""

    form = RecordAdminForm
    list_display = ("id", "datanet", "contributor", "status", "flag_kinds", "created_at")
    list_filter = ("status", "datanet")
    search_fields = ("content_hash", "content")
    raw_id_fields = ("datanet", "contributor", "upload", "reviewed_by", "near_duplicate_of")
    readonly_fields = ("content_hash", "token_count", "flags", "flag_kinds")

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.versions.exists():
            return [field.name for field in Record._meta.concrete_fields]
        return super().get_readonly_fields(request, obj)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and not (obj is not None and obj.versions.exists())

    def save_model(self, request, obj, form, change):
        if change and "content" in form.changed_data:
            content = obj.content
            obj.content = form.initial["content"]
            super().save_model(request, obj, form, change)
            edited = integrity.record_content_change(record=obj, value=content, by=request.user)
            for field in ("content", "content_hash", "token_count", "flags", "flag_kinds"):
                setattr(obj, field, getattr(edited, field))
            return
        if not change:  # a record added by hand: hashed and counted as an ingested one
            prepared = integrity.record_content_prepare(datanet=obj.datanet, value=obj.content)
            obj.content_hash, obj.token_count = prepared.hashes[0], prepared.tokens[0]
        super().save_model(request, obj, form, change)


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
