from decimal import Decimal

from django.contrib import admin
from django.db.models import Sum

from budgets.forms import BaseBudgetLineFormSet
from budgets.models import Budget, BudgetLine
from spendtracker.admin_display import amount_display


class BudgetLineInline(admin.TabularInline):
    model = BudgetLine
    # The portal's checks: no duplicate month/category, lines add up to the total
    # when the budget asks for it.
    formset = BaseBudgetLineFormSet
    extra = 0
    fields = ("month", "category", "amount")


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
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
    autocomplete_fields = ("project", "approved_by")
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
        ("Approval", {"fields": ("approved_by", "approved_at")}),
    )

    def get_queryset(self, request):
        return (
            super().get_queryset(request).annotate(_planned_total=Sum("lines__amount"))
        )

    @admin.display(description="total", ordering="total")
    def total_display(self, obj: Budget) -> str | None:
        return amount_display(obj.total, obj.currency)

    @admin.display(description="sum of lines", ordering="_planned_total")
    def planned_total_display(self, obj: Budget) -> str | None:
        return amount_display(obj._planned_total or Decimal("0"), obj.currency)


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
