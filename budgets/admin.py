from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.db.models import F, Sum

from budgets.forms import BaseBudgetLineFormSet
from budgets.models import (
    Alert,
    AlertRule,
    Budget,
    BudgetLine,
    BudgetRevision,
    Notification,
)
from core.admin import AuditedAdmin
from core.admin_actions import retry_given_up
from core.admin_display import amount_display
from core.currencies import ZERO
from core.models import AuditEvent


class BudgetLineInline(admin.TabularInline):
    model = BudgetLine
    # The portal's checks: no duplicate month/category, lines add up to the total
    # when the budget asks for it.
    formset = BaseBudgetLineFormSet
    extra = 0
    fields = ("month", "category", "amount")

    # An approved plan changes through a revision that finance decides, in the portal.
    def has_add_permission(self, request, obj=None) -> bool:
        return _is_draft(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request, obj=None) -> bool:
        return _is_draft(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return _is_draft(obj) and super().has_delete_permission(request, obj)


def _is_draft(budget: Budget | None) -> bool:
    return budget is None or budget.status == Budget.Status.DRAFT


# Approval happens in the portal, where nobody approves their own draft: here the
# approval and who wrote the draft are read-only, so an approver cannot be forged.
BUDGET_APPROVAL_FIELDS = ("status", "approved_by", "approved_at", "version", "authors")


@admin.register(Budget)
class BudgetAdmin(AuditedAdmin):
    audit_kind = AuditEvent.Kind.BUDGET
    list_display = (
        "project",
        "total_display",
        "planned_total_display",
        "cost_measure",
        "status",
        "start_date",
        "end_date",
        "tolerance_percent",
        "approved_by",
        "approved_at",
    )
    list_filter = ("status", "cost_measure", "currency", "project__team")
    search_fields = ("project__name", "project__slug")
    ordering = ("project__name",)
    date_hierarchy = "start_date"
    autocomplete_fields = ("project",)
    list_select_related = ("project", "approved_by")
    inlines = (BudgetLineInline,)
    fieldsets = (
        (None, {"fields": ("project", "status")}),
        (
            "Plan",
            {
                "fields": (
                    ("total", "currency"),
                    "cost_measure",
                    ("start_date", "end_date"),
                    "lines_must_sum_to_total",
                )
            },
        ),
        ("Alerts", {"fields": ("tolerance_percent",)}),
        (
            "Approval",
            {"fields": ("approved_by", "approved_at", "version", "authors")},
        ),
    )

    def get_object(self, request, object_id, from_field=None):
        """A change holds the budget's row until it is saved, as the portal's plan
        saves and approvals do: an approval that committed first is seen (and the
        plan is read-only), one clicked meanwhile waits and finds a newer version."""
        if request.method == "POST":
            Budget.objects.select_for_update().filter(pk=unquote(object_id)).first()
        return super().get_object(request, object_id, from_field)

    def get_readonly_fields(self, request, obj=None):
        if _is_draft(obj):
            return BUDGET_APPROVAL_FIELDS
        return [f.name for f in Budget._meta.fields] + ["authors"]

    def save_model(self, request, obj: Budget, form, change: bool) -> None:
        """A draft changed here is a new version, with its editor among its
        authors, as in the portal."""
        if not _is_draft(obj):  # read-only: nothing of it was changed
            return
        if change:
            obj.version = F("version") + 1
        super().save_model(request, obj, form, change)
        obj.refresh_from_db(fields=["version"])
        obj.authors.add(request.user)

    def get_queryset(self, request):
        return (
            super().get_queryset(request).annotate(_planned_total=Sum("lines__amount"))
        )

    @admin.display(description="total", ordering="total")
    def total_display(self, obj: Budget) -> str | None:
        return amount_display(obj.total, obj.currency)

    @admin.display(description="sum of lines", ordering="_planned_total")
    def planned_total_display(self, obj: Budget) -> str | None:
        return amount_display(obj._planned_total or ZERO, obj.currency)


@admin.register(BudgetLine)
class BudgetLineAdmin(admin.ModelAdmin):
    list_display = ("budget", "month", "category", "amount_display")
    list_filter = ("category", "budget__project__team")
    search_fields = ("budget__project__name", "category")
    ordering = ("budget__project__name", "month", "category")
    date_hierarchy = "month"
    autocomplete_fields = ("budget",)
    list_select_related = ("budget__project",)

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, obj: BudgetLine) -> str | None:
        return amount_display(obj.amount, obj.budget.currency)


@admin.register(BudgetRevision)
class BudgetRevisionAdmin(admin.ModelAdmin):
    list_display = ("budget", "status", "proposed_by", "proposed_at", "decided_by")
    list_filter = ("status",)
    search_fields = ("budget__project__name",)
    list_select_related = ("budget__project", "proposed_by", "decided_by")
    # Revisions are proposed and decided in the portal, where nobody decides their
    # own: every field is read-only here, so a decision cannot be forged.
    readonly_fields = [f.name for f in BudgetRevision._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    list_display = ("kind", "project", "is_enabled", "thresholds")
    list_filter = ("kind", "is_enabled")
    autocomplete_fields = ("project",)


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ("subject", "kind", "severity", "status", "period", "fired_at")
    list_filter = ("status", "kind", "severity")
    search_fields = ("subject", "project__name")
    date_hierarchy = "fired_at"
    list_select_related = ("project",)
    # Alerts are the evaluator's record: read them here, acknowledge in the portal.
    readonly_fields = [f.name for f in Alert._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = (
        "alert",
        "user",
        "channel",
        "status",
        "attempts",
        "refusals",
        "sent_at",
    )
    actions = [retry_given_up]
    list_filter = ("status", "channel")
    list_select_related = ("alert", "user")
    readonly_fields = [f.name for f in Notification._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False
