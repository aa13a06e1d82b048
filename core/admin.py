from django.contrib import admin
from django.http import HttpRequest

from core import audit
from core.models import AuditEvent


class AuditedAdmin(admin.ModelAdmin):
    """Changes made in the admin go to the audit log under `audit_kind`, with the
    names of the fields and inlines changed (Django's change message), never their
    values: a credentials field records that it changed, not what to."""

    audit_kind: str

    def log_addition(self, request: HttpRequest, obj, message):
        audit.record(kind=self.audit_kind, action="added in admin", target=obj)
        return super().log_addition(request, obj, message)

    def log_change(self, request: HttpRequest, obj, message):
        audit.record(
            kind=self.audit_kind,
            action="changed in admin",
            target=obj,
            details={"changes": message},
        )
        return super().log_change(request, obj, message)

    def log_deletions(self, request: HttpRequest, queryset):
        for obj in queryset:
            audit.record(kind=self.audit_kind, action="deleted in admin", target=obj)
        return super().log_deletions(request, queryset)


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """The audit log is append-only: read here, never added, changed or deleted."""

    list_display = ("at", "actor_name", "kind", "action", "target_name", "ip")
    list_filter = ("kind",)
    search_fields = ("actor_name", "action", "target_name")
    date_hierarchy = "at"
    readonly_fields = [f.name for f in AuditEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
