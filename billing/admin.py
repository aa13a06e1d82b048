from django.contrib import admin, messages
from django.db.models import Sum
from django.template.response import TemplateResponse

from billing.forms import ENDPOINT_CHANGED, BillingSourceForm
from billing.invoices import compute_invoices_decide, compute_invoices_queue_load
from billing.models import (
    Accrual,
    BillingSource,
    ComputeInvoice,
    ComputeInvoiceLine,
    CostRecord,
    DailyCost,
    FxRate,
    ImportRun,
    ProviderInvoice,
)
from billing.reconciliation import invoice_checks
from billing.services import allocation_preview, cost_records_reallocate
from billing.tasks import rollup_rebuild_for_rates
from core.admin import AuditedAdmin
from core.admin_display import amount_display
from core.crypto import UNREADABLE_SHORT
from core.currencies import ZERO
from core.models import AuditEvent
from core.tasks import enqueue_after_commit
from projects.models import AllocationRule


class ReadOnlyAdmin(admin.ModelAdmin):
    """For tables the services write: viewable, never edited by hand."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(BillingSource)
class BillingSourceAdmin(AuditedAdmin):
    audit_kind = AuditEvent.Kind.SOURCE
    form = BillingSourceForm
    list_display = (
        "name",
        "kind",
        "is_enabled",
        "data_complete_through",
        "last_sync_at",
        "has_error",
    )
    list_filter = ("kind", "is_enabled")
    search_fields = ("name",)
    ordering = ("name",)
    readonly_fields = (
        "data_complete_through",
        "last_sync_at",
        "last_error",
        "stored_credentials",
    )

    @admin.display(description="stored credentials")
    def stored_credentials(self, obj: BillingSource) -> str:
        masked = obj.masked_credentials
        if masked is None:
            return UNREADABLE_SHORT
        return ", ".join(f"{key}: {value}" for key, value in masked.items()) or "none"

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        if form.credentials_cleared:
            messages.warning(request, ENDPOINT_CHANGED)

    @admin.display(description="error", boolean=True)
    def has_error(self, obj: BillingSource) -> bool:
        return bool(obj.last_error)


@admin.register(ImportRun)
class ImportRunAdmin(ReadOnlyAdmin):
    list_display = (
        "started_at",
        "source",
        "status",
        "file_name",
        "rows_read",
        "rows_loaded",
        "origin",
        "attempts",
        "finished_at",
    )
    list_filter = ("status", "origin", "source")
    search_fields = ("file_name", "checksum", "source__name")
    ordering = ("-started_at",)
    date_hierarchy = "started_at"
    list_select_related = ("source",)


@admin.register(CostRecord)
class CostRecordAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "charge_period_start",
        "provider_name",
        "service_name",
        "charge_category",
        "billed",
        "effective",
        "billing_currency",
        "project",
        "training_run",
        "is_provisional",
    )
    list_filter = (
        "provider_name",
        "charge_category",
        "is_provisional",
        "billing_currency",
        "source",
    )
    # Exact matches on ids, prefix matches on names: no full scans of a big table.
    search_fields = (
        "=invoice_id",
        "=resource_id",
        "=sku_id",
        "=billing_account_id",
        "=sub_account_id",
        "^service_name",
        "^resource_name",
    )
    search_help_text = (
        "Exact invoice, resource, SKU or account id; or the start of a service or "
        "resource name."
    )
    ordering = ("-charge_period_start", "-id")
    date_hierarchy = "charge_period_start"
    autocomplete_fields = ("project", "training_run", "source")
    raw_id_fields = ("import_run",)
    list_select_related = ("project", "training_run")
    show_full_result_count = False
    list_per_page = 50
    fieldsets = (
        (
            "Allocation",
            {"fields": ("project", "training_run", "is_provisional")},
        ),
        ("Origin", {"fields": ("source", "import_run")}),
        (
            "Account",
            {
                "fields": (
                    ("billing_account_id", "billing_account_name"),
                    ("sub_account_id", "sub_account_name"),
                )
            },
        ),
        (
            "Periods",
            {
                "fields": (
                    ("billing_period_start", "billing_period_end"),
                    ("charge_period_start", "charge_period_end"),
                )
            },
        ),
        (
            "Charge",
            {
                "fields": (
                    ("charge_category", "charge_class", "charge_frequency"),
                    "charge_description",
                )
            },
        ),
        (
            "Cost",
            {
                "fields": (
                    ("billed_cost", "effective_cost"),
                    ("list_cost", "contracted_cost"),
                    "billing_currency",
                    "invoice_id",
                )
            },
        ),
        (
            "Provider and service",
            {
                "fields": (
                    ("provider_name", "publisher_name", "invoice_issuer_name"),
                    ("service_name", "service_category"),
                    "sku_id",
                    "region_id",
                )
            },
        ),
        (
            "Resource and usage",
            {
                "fields": (
                    "resource_id",
                    ("resource_name", "resource_type"),
                    ("consumed_quantity", "consumed_unit"),
                    "tags",
                )
            },
        ),
    )

    @admin.display(description="billed cost", ordering="billed_cost")
    def billed(self, obj: CostRecord) -> str | None:
        return amount_display(obj.billed_cost)

    @admin.display(description="effective cost", ordering="effective_cost")
    def effective(self, obj: CostRecord) -> str | None:
        return amount_display(obj.effective_cost)


@admin.register(DailyCost)
class DailyCostAdmin(ReadOnlyAdmin):
    """The rollup rebuilt from CostRecord by billing.services.daily_costs_rebuild."""

    list_display = (
        "date",
        "project",
        "training_run",
        "provider_name",
        "service_name",
        "billing_currency",
        "fx_rate",
        "effective",
        "billed",
        "gpu_hours_display",
        "is_provisional",
    )
    list_filter = ("provider_name", "billing_currency", "is_provisional", "project")
    search_fields = ("^provider_name", "^service_name", "project__name")
    ordering = ("-date",)
    date_hierarchy = "date"
    list_select_related = ("project", "training_run")
    show_full_result_count = False
    list_per_page = 50

    @admin.display(description="effective cost", ordering="effective_cost")
    def effective(self, obj: DailyCost) -> str | None:
        return amount_display(obj.effective_cost)

    @admin.display(description="billed cost", ordering="billed_cost")
    def billed(self, obj: DailyCost) -> str | None:
        return amount_display(obj.billed_cost)

    @admin.display(description="GPU-hours", ordering="gpu_hours")
    def gpu_hours_display(self, obj: DailyCost) -> str | None:
        return amount_display(obj.gpu_hours) if obj.gpu_hours else None


@admin.register(FxRate)
class FxRateAdmin(admin.ModelAdmin):
    """Rates typed in by hand; `load_fx_rates` loads whole files. Either way the
    rollup is rebuilt for the days a rate changes (here by a task, after saving)."""

    list_display = ("currency", "date", "rate")
    list_filter = ("currency",)
    search_fields = ("=currency",)
    ordering = ("currency", "-date")
    date_hierarchy = "date"

    def save_model(self, request, obj, form, change):
        before = FxRate.objects.filter(pk=obj.pk).values_list("currency", "date")
        changed = [*before, (obj.currency, obj.date)] if change else []
        super().save_model(request, obj, form, change)
        self._rebuild(request, changed or [(obj.currency, obj.date)])

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        self._rebuild(request, [(obj.currency, obj.date)])

    def delete_queryset(self, request, queryset):
        changed = list(queryset.values_list("currency", "date"))
        super().delete_queryset(request, queryset)
        self._rebuild(request, changed)

    def _rebuild(self, request, changed) -> None:
        pairs = [[currency, day.isoformat()] for currency, day in changed]
        enqueue_after_commit(rollup_rebuild_for_rates, pairs)
        self.message_user(
            request, "The rollup is being rebuilt for the days these rates convert."
        )


@admin.register(ProviderInvoice)
class ProviderInvoiceAdmin(admin.ModelAdmin):
    """Invoice totals finance types in from providers' invoices: the monthly report
    sets each against the billed cost of the cost records with its invoice id."""

    list_display = (
        "provider",
        "invoice_id",
        "month",
        "source",
        "amount_display",
        "currency",
    )
    list_filter = ("provider", "currency", "month")
    search_fields = ("=invoice_id", "provider")
    ordering = ("-month", "provider", "invoice_id")
    date_hierarchy = "month"
    autocomplete_fields = ("source",)
    list_select_related = ("source",)
    readonly_fields = ("billed_by_cost_records",)

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, obj: ProviderInvoice) -> str | None:
        return amount_display(obj.amount, obj.currency)

    @admin.display(description="billed by the cost records")
    def billed_by_cost_records(self, obj: ProviderInvoice) -> str:
        if obj.pk is None:
            return "—"
        check = next(c for c in invoice_checks(month=obj.month) if c.invoice == obj)
        difference = check.difference or ZERO
        text = amount_display(check.billed, obj.currency) or ""
        if difference:
            text += f" (difference {difference.normalize():f} {obj.currency})"
        return text


@admin.register(Accrual)
class AccrualAdmin(admin.ModelAdmin):
    """Accruals as finance booked them from the monthly report: never edited, so the
    true-up compares with what was booked; an admin may delete a mistaken booking."""

    list_display = (
        "month",
        "provider",
        "team",
        "amount_display",
        "final_at_booking",
        "booked_at",
        "booked_by",
    )
    list_filter = ("month", "provider", "team")
    ordering = ("-month", "provider", "team__name")
    list_select_related = ("team", "booked_by")

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="accrued", ordering="amount")
    def amount_display(self, obj: Accrual) -> str | None:
        return amount_display(obj.amount, obj.currency)


class ComputeInvoiceLineInline(admin.TabularInline):
    model = ComputeInvoiceLine
    extra = 0
    fields = ("description", "gpu_type", "gpu_hours", "rate", "amount")


@admin.register(ComputeInvoice)
class ComputeInvoiceAdmin(admin.ModelAdmin):
    list_display = (
        "invoice_number",
        "vendor",
        "issued_on",
        "period_start",
        "period_end",
        "status",
        "project",
        "training_run",
        "total_display",
    )
    list_display_links = ("invoice_number", "vendor")
    list_filter = ("status", "vendor", "currency")
    search_fields = ("vendor", "invoice_number", "project__name", "training_run__name")
    ordering = ("-issued_on", "vendor")
    date_hierarchy = "issued_on"
    autocomplete_fields = ("project", "training_run")
    list_select_related = ("project", "training_run")
    inlines = (ComputeInvoiceLineInline,)
    readonly_fields = ("decided_by", "decided_at")
    actions = ["approve", "reject"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_total=Sum("lines__amount"))

    def save_related(self, request, form, formsets, change):
        # Lines are saved after the invoice: restate its cost once both are in.
        super().save_related(request, form, formsets, change)
        compute_invoices_queue_load(invoice_ids=[form.instance.pk])

    @admin.action(description="Approve: count these invoices as cost")
    def approve(self, request, queryset):
        self._set_status(request, queryset, ComputeInvoice.Status.APPROVED)

    @admin.action(description="Reject: remove these invoices from cost")
    def reject(self, request, queryset):
        self._set_status(request, queryset, ComputeInvoice.Status.REJECTED)

    def _set_status(self, request, queryset, status: str) -> None:
        count = compute_invoices_decide(
            invoice_ids=list(queryset.values_list("pk", flat=True)),
            status=status,
            by=request.user,
        )
        self.message_user(
            request, f"{count} invoice(s) {status}; their cost is being restated."
        )

    @admin.display(description="total", ordering="_total")
    def total_display(self, obj: ComputeInvoice) -> str | None:
        return amount_display(obj._total or ZERO, obj.currency)


@admin.register(ComputeInvoiceLine)
class ComputeInvoiceLineAdmin(admin.ModelAdmin):
    list_display = (
        "description",
        "invoice",
        "gpu_type",
        "gpu_hours",
        "rate",
        "amount_display",
    )
    list_filter = ("gpu_type", "invoice__status")
    search_fields = ("description", "invoice__invoice_number", "invoice__vendor")
    ordering = ("-invoice__issued_on", "id")
    autocomplete_fields = ("invoice",)
    list_select_related = ("invoice",)

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, obj: ComputeInvoiceLine) -> str | None:
        return amount_display(obj.amount, obj.invoice.currency)


@admin.register(AllocationRule)
class AllocationRuleAdmin(AuditedAdmin):
    audit_kind = AuditEvent.Kind.ALLOCATION_RULE
    list_display = (
        "priority",
        "project",
        "match_on",
        "tag_key",
        "value",
        "run_tag_key",
        "training_run",
        "is_active",
    )
    list_display_links = ("priority", "project")
    list_filter = ("is_active", "match_on", "project")
    search_fields = ("value", "tag_key", "run_tag_key", "project__name")
    ordering = ("priority", "id")
    autocomplete_fields = ("project", "training_run")
    list_select_related = ("project", "training_run")
    actions = ["reallocate_history"]

    @admin.action(description="Re-apply all active rules to stored costs…")
    def reallocate_history(self, request, queryset):
        # Rules are ordered across all projects, so the whole set is re-applied
        # whichever rules are selected. The first click previews; "Apply" moves.
        if request.POST.get("apply") != "yes":
            return TemplateResponse(
                request,
                "admin/projects/allocationrule/reallocate_preview.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Re-allocate stored costs",
                    "moves": allocation_preview(),
                    "selected": queryset.values_list("pk", flat=True),
                    "opts": self.model._meta,
                },
            )
        moved = cost_records_reallocate()
        if moved is None:
            self.message_user(request, "No cost moved: every record already matches.")
        else:
            start, end = moved
            self.message_user(
                request,
                f"Costs re-allocated; rollup rebuilt for {start} to {end}.",
                messages.SUCCESS,
            )
