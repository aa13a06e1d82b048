from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import ObjectDoesNotExist
from django.db.models import DecimalField, ExpressionWrapper, F

from core.admin import AuditedAdmin
from core.admin_display import amount_display
from core.models import AuditEvent
from projects.models import AllocationRule, Project, TrainingRun


class TrainingRunInline(admin.TabularInline):
    model = TrainingRun
    extra = 0
    show_change_link = True
    fields = (
        "name",
        "external_id",
        "status",
        "gpu_type",
        "gpu_count",
        "planned_gpu_hours",
        "rate_per_gpu_hour",
        "currency",
        "start_date",
        "end_date",
    )


class AllocationRuleInline(admin.TabularInline):
    model = AllocationRule
    extra = 0
    show_change_link = True
    fields = (
        "priority",
        "match_on",
        "tag_key",
        "value",
        "run_tag_key",
        "training_run",
        "is_active",
    )

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        # Offer only the runs of the project being edited (none while adding one).
        if db_field.name == "training_run":
            object_id = request.resolver_match.kwargs.get("object_id")
            runs = TrainingRun.objects.all()
            kwargs["queryset"] = (
                runs.filter(project_id=unquote(object_id)) if object_id else runs.none()
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(Project)
class ProjectAdmin(AuditedAdmin):
    # Its inlines hold the project's allocation rules and planned runs.
    audit_kind = AuditEvent.Kind.ALLOCATION_RULE
    list_display = (
        "name",
        "team",
        "owner",
        "kind",
        "status",
        "start_date",
        "end_date",
        "budget_total",
    )
    list_filter = (
        "status",
        "kind",
        "team",
        ("archived_at", admin.EmptyFieldListFilter),
    )
    search_fields = ("name", "slug", "description", "team__name", "owner__email")
    ordering = ("name",)
    date_hierarchy = "start_date"
    prepopulated_fields = {"slug": ("name",)}
    autocomplete_fields = ("team", "owner")
    list_select_related = ("team", "owner", "budget")
    inlines = (TrainingRunInline, AllocationRuleInline)

    @admin.display(description="budget", ordering="budget__total")
    def budget_total(self, obj: Project) -> str | None:
        try:
            budget = obj.budget
        except ObjectDoesNotExist:
            return None
        return amount_display(budget.total, budget.currency)


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "project",
        "external_id",
        "status",
        "gpu_type",
        "gpu_count",
        "planned_gpu_hours",
        "rate",
        "planned_cost_display",
        "start_date",
        "end_date",
    )
    list_filter = ("status", "gpu_type", "currency", "project__team")
    search_fields = ("name", "external_id", "gpu_type", "project__name")
    ordering = ("-start_date", "name")
    date_hierarchy = "start_date"
    autocomplete_fields = ("project",)
    list_select_related = ("project",)

    def get_queryset(self, request):
        planned_cost = ExpressionWrapper(
            F("planned_gpu_hours") * F("rate_per_gpu_hour"),
            output_field=DecimalField(max_digits=26, decimal_places=6),
        )
        return super().get_queryset(request).annotate(_planned_cost=planned_cost)

    @admin.display(description="rate / GPU-hour", ordering="rate_per_gpu_hour")
    def rate(self, obj: TrainingRun) -> str | None:
        return amount_display(obj.rate_per_gpu_hour, obj.currency, places=4)

    @admin.display(description="planned cost", ordering="_planned_cost")
    def planned_cost_display(self, obj: TrainingRun) -> str | None:
        return amount_display(obj.planned_cost, obj.currency)
