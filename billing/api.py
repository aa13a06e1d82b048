from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.generics import ListAPIView, RetrieveAPIView

from accounts.permissions import require_billing_operator
from billing.explorer import (
    DIMENSIONS,
    NONE,
    ExplorerQuery,
    daily_costs_in_range,
    records_in_range,
)
from billing.forms import ExplorerForm
from billing.models import (
    COST_COLUMNS,
    BillingSource,
    ComputeInvoice,
    ComputeInvoiceLine,
    CostRecord,
    DailyCost,
    ImportRun,
)
from billing.selectors import invoice_get_for_user, invoices_visible_to
from core.currencies import ZERO
from core.pagination import CursorPagination


class BillingOperatorsOnly:
    """Billing sources and imports are for finance and admins, as in the portal."""

    def initial(self, request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        require_billing_operator(request.user)


class BillingSourceSerializer(serializers.ModelSerializer):
    """A source without its configuration or credentials: those stay in the portal."""

    class Meta:
        model = BillingSource
        fields = [
            "id",
            "name",
            "kind",
            "is_enabled",
            "sync_every_minutes",
            "data_complete_through",
            "last_sync_at",
        ]


class BillingSourceListApi(BillingOperatorsOnly, ListAPIView):
    serializer_class = BillingSourceSerializer
    queryset = BillingSource.objects.order_by("name", "pk")


class BillingSourceDetailApi(BillingOperatorsOnly, RetrieveAPIView):
    serializer_class = BillingSourceSerializer
    queryset = BillingSource.objects.all()


class ImportRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = ImportRun
        fields = [
            "id",
            "source",
            "source_name",
            "status",
            "origin",
            "file_name",
            "file_format",
            "billing_periods",
            "rows_read",
            "rows_loaded",
            "totals",
            "replaced",
            "warnings",
            "error",
            "started_at",
            "finished_at",
        ]


class ImportRunListApi(BillingOperatorsOnly, ListAPIView):
    """Every import, newest first; `?source=<id>` for one source's."""

    serializer_class = ImportRunSerializer

    @extend_schema(
        parameters=[OpenApiParameter("source", int, description="A source's id.")]
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        runs = ImportRun.objects.order_by("-started_at", "-pk")
        source = self.request.query_params.get("source", "")
        if source.isdigit():
            runs = runs.filter(source_id=source)
        elif source:
            runs = runs.none()
        return runs


class ImportRunDetailApi(BillingOperatorsOnly, RetrieveAPIView):
    serializer_class = ImportRunSerializer
    queryset = ImportRun.objects.all()


# The explorer's filters, as its query string has them (README, *Cost explorer*).
COST_FILTERS = [
    OpenApiParameter(
        "start", OpenApiTypes.DATE, description="First day (default: the month's)."
    ),
    OpenApiParameter(
        "end", OpenApiTypes.DATE, description="Last day, included (default: today)."
    ),
    *(
        OpenApiParameter(
            name,
            str,
            description=f"{dimension.label}"
            + (" (slug)" if name in ("team", "project") else "")
            + (" (id)" if name in ("run", "source") else "")
            + (" (yes or no)" if dimension.boolean else "")
            + f"; {NONE} for none.",
        )
        for name, dimension in DIMENSIONS.items()
    ),
    OpenApiParameter(
        "tag", str, many=True, description=f"key=value, repeatable; key={NONE}."
    ),
]


def cost_query(request) -> ExplorerQuery:
    """The question of the query string, read as the cost explorer reads it; a filter
    naming a team, project or run the caller does not see is a 400 naming it."""
    form = ExplorerForm(request.query_params, user=request.user, today=_today())
    if not form.is_valid():
        raise serializers.ValidationError(
            {
                "non_field_errors" if name == "__all__" else name: messages
                for name, messages in form.errors.items()
            }
        )
    return form.query()


def _today():
    return timezone.now().date()


class CostRecordSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(
        slug_field="slug", read_only=True, allow_null=True
    )

    class Meta:
        model = CostRecord
        fields = [
            "id",
            "source",
            "import_run",
            "billing_account_id",
            "sub_account_id",
            "billing_period_start",
            "billing_period_end",
            "charge_period_start",
            "charge_period_end",
            "charge_category",
            "charge_class",
            "charge_description",
            "billing_currency",
            *COST_COLUMNS,
            "provider_name",
            "service_name",
            "service_category",
            "region_id",
            "resource_id",
            "resource_name",
            "sku_id",
            "consumed_quantity",
            "consumed_unit",
            "tags",
            "is_provisional",
            "project",
            "training_run",
        ]


class CostRecordPagination(CursorPagination):
    ordering = ("charge_period_start", "id")


@extend_schema(parameters=COST_FILTERS)
class CostRecordListApi(ListAPIView):
    """The cost lines the caller may see, as the cost explorer's records page lists
    them: charges starting in the range, and longer ones spread into it."""

    serializer_class = CostRecordSerializer
    pagination_class = CostRecordPagination

    def get_queryset(self):
        query = cost_query(self.request)
        return records_in_range(self.request.user, query).select_related("project")


class DailyCostSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(
        slug_field="slug", read_only=True, allow_null=True
    )

    class Meta:
        model = DailyCost
        fields = [
            "id",
            "date",
            "project",
            "training_run",
            "source",
            "provider_name",
            "service_name",
            "service_category",
            "charge_category",
            "is_provisional",
            "billing_currency",
            "fx_rate",
            *COST_COLUMNS,
            "billed_in_billing_currency",
            "effective_in_billing_currency",
            "gpu_hours",
            "cost_lines",
        ]


class DailyCostPagination(CursorPagination):
    ordering = ("date", "id")


# What only the cost records know, the daily rollup cannot be filtered by.
ROLLUP_FILTERS = [
    parameter
    for parameter in COST_FILTERS
    if parameter.name not in ("region", "sub_account", "resource", "tag")
]


@extend_schema(parameters=ROLLUP_FILTERS)
class DailyCostListApi(ListAPIView):
    """The daily rollup the portal reads: amounts converted with `fx_rate` into the
    reporting currency (rows without a rate stay in their billing currency)."""

    serializer_class = DailyCostSerializer
    pagination_class = DailyCostPagination

    def get_queryset(self):
        query = cost_query(self.request)
        if query.reads_records:
            asked = [name for name, _ in query.filters if not DIMENSIONS[name].rollup]
            raise serializers.ValidationError(
                {
                    name: ["The daily rollup has no such column: filter cost records."]
                    for name in asked or ["tag"]
                }
            )
        return daily_costs_in_range(self.request.user, query).select_related("project")


class ComputeInvoiceLineSerializer(serializers.ModelSerializer):
    class Meta:
        model = ComputeInvoiceLine
        fields = ["description", "gpu_type", "gpu_hours", "rate", "amount"]


INVOICE_TOTAL = serializers.DecimalField(max_digits=20, decimal_places=4)


class ComputeInvoiceSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(
        slug_field="slug", read_only=True, allow_null=True
    )
    lines = ComputeInvoiceLineSerializer(many=True, read_only=True)
    total = serializers.SerializerMethodField()

    class Meta:
        model = ComputeInvoice
        fields = [
            "id",
            "vendor",
            "invoice_number",
            "issued_on",
            "period_start",
            "period_end",
            "currency",
            "status",
            "project",
            "training_run",
            "notes",
            "decided_at",
            "lines",
            "total",
        ]

    @extend_schema_field(INVOICE_TOTAL)
    def get_total(self, invoice: ComputeInvoice) -> str:
        """The lines' sum, from the prefetched lines (`ComputeInvoice.total` asks
        the database once per invoice), as exact decimal text."""
        total = sum((line.amount for line in invoice.lines.all()), ZERO)
        return INVOICE_TOTAL.to_representation(total)


class ComputeInvoiceListApi(ListAPIView):
    """The invoices of the projects the caller sees; every one for finance."""

    serializer_class = ComputeInvoiceSerializer

    def get_queryset(self):
        return (
            invoices_visible_to(self.request.user)
            .select_related("project")
            .prefetch_related("lines")
            .order_by("-issued_on", "pk")
        )


class ComputeInvoiceDetailApi(RetrieveAPIView):
    serializer_class = ComputeInvoiceSerializer

    def get_object(self) -> ComputeInvoice:
        return invoice_get_for_user(self.request.user, self.kwargs["pk"])
