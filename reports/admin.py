from django.contrib import admin

from core.admin_actions import retry_given_up
from reports.models import MonthClose, MonthCloseRequest, ReportEmail, SnapshotFile


class SnapshotFileInline(admin.TabularInline):
    model = SnapshotFile
    fields = ("format", "sha256", "size")
    readonly_fields = fields
    extra = 0
    can_delete = False

    @admin.display(description="bytes")
    def size(self, obj: SnapshotFile) -> int:
        return len(obj.content)

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(MonthClose)
class MonthCloseAdmin(admin.ModelAdmin):
    """Read only: months are closed and reopened on the report, where it is logged."""

    list_display = ("month", "closed_by", "closed_at", "forced", "reopened_at")
    list_filter = ("forced",)
    inlines = (SnapshotFileInline,)

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(MonthCloseRequest)
class MonthCloseRequestAdmin(admin.ModelAdmin):
    """Read only: finance asks for a close on the report; a worker records the end."""

    list_display = ("month", "requested_by", "requested_at", "status", "finished_at")
    list_filter = ("status",)

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ReportEmail)
class ReportEmailAdmin(admin.ModelAdmin):
    list_display = ("month", "user", "status", "attempts", "refusals", "sent_at")
    list_filter = ("status", "month")
    actions = [retry_given_up]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]
