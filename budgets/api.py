from collections.abc import Iterator

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Prefetch
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import APIException, PermissionDenied
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import require_allocation_editor, require_plan_editor
from budgets.alerts.lifecycle import alert_acknowledge
from budgets.forms import PlanForms
from budgets.models import (
    PLAN_FIELDS,
    Alert,
    Budget,
    BudgetLine,
    BudgetRevision,
    RunEvent,
)
from budgets.selectors import alert_get_for_user, alerts_visible_to
from budgets.services import (
    allocation_rule_create,
    budget_save_plan,
    budget_unsaved,
    plan_snapshot,
    project_summary,
    run_progress_report,
)
from budgets.telemetry import FINISHED, EventRefused, run_event_record
from projects.api import PROJECT_FILTER
from projects.models import AllocationRule, ApiToken, Project, TrainingRun
from projects.selectors import project_get_for_user, projects_visible_to

ACTIVE = [Alert.Status.OPEN, Alert.Status.ACKNOWLEDGED]


class AcknowledgementSerializer(serializers.Serializer):
    """Who is on it by name: a person's address is not shown to everyone on a team."""

    by = serializers.CharField(source="user.display_name", allow_null=True)
    at = serializers.DateTimeField()
    note = serializers.CharField()

    class Meta:
        ref_name = "Acknowledgement"


@extend_schema(
    parameters=[
        OpenApiParameter(
            "status",
            str,
            enum=[*Alert.Status.values, "all"],
            description="Default: open and acknowledged.",
        ),
        PROJECT_FILTER,
    ]
)
class AlertListApi(ListAPIView):
    """The caller's alerts, newest first; `?status=open|acknowledged|resolved|all`
    (default: open and acknowledged), `?project=<slug>`. Each with its
    acknowledgements, oldest first."""

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        kind = serializers.CharField()
        severity = serializers.CharField()
        status = serializers.CharField()
        subject = serializers.CharField()
        reason = serializers.CharField()
        project = serializers.CharField(source="project.slug", allow_null=True)
        training_run = serializers.CharField(
            source="training_run.external_id", allow_null=True
        )
        period = serializers.DateField()
        threshold = serializers.DecimalField(max_digits=12, decimal_places=2)
        value = serializers.DecimalField(max_digits=20, decimal_places=2)
        waiting_for = serializers.CharField()
        fired_at = serializers.DateTimeField()
        resolved_at = serializers.DateTimeField(allow_null=True)
        acknowledgements = AcknowledgementSerializer(many=True)

        class Meta:
            ref_name = "Alert"

    serializer_class = OutputSerializer

    def get_queryset(self):
        alerts = (
            alerts_visible_to(self.request.user)
            .select_related("project", "training_run")
            .prefetch_related("acknowledgements__user")
        )
        status = self.request.query_params.get("status", "active")
        if status in Alert.Status.values:
            alerts = alerts.filter(status=status)
        elif status != "all":
            alerts = alerts.filter(status__in=ACTIVE)
        if project := self.request.query_params.get("project"):
            alerts = alerts.filter(project__slug=project)
        return alerts.order_by("-fired_at", "-id")


class ProjectVarianceApi(APIView):
    class OutputSerializer(serializers.Serializer):
        slug = serializers.CharField()
        as_of = serializers.DateField()
        currency = serializers.CharField()
        budget = serializers.DecimalField(max_digits=20, decimal_places=2)
        plan_to_date = serializers.DecimalField(max_digits=20, decimal_places=2)
        actual_to_date = serializers.DecimalField(max_digits=20, decimal_places=2)
        variance = serializers.DecimalField(max_digits=20, decimal_places=2)
        variance_percent = serializers.DecimalField(
            max_digits=8, decimal_places=1, allow_null=True
        )
        forecast = serializers.DecimalField(max_digits=20, decimal_places=2)
        status = serializers.CharField()
        reason = serializers.CharField()

        class Meta:
            ref_name = "ProjectVariance"

    serializer_class = OutputSerializer

    def get(self, request: Request, slug: str) -> Response:
        project = project_get_for_user(request.user, slug)
        today = timezone.now().date()
        summary = project_summary(project=project, as_of=today)
        variance = summary.variance
        if variance is None:
            return Response({"detail": "This project has no budget yet."}, status=404)
        data = {
            "slug": project.slug,
            "as_of": today,
            "currency": summary.currency,
            "budget": variance.total,
            "plan_to_date": variance.plan_to_date,
            "actual_to_date": variance.actual_to_date,
            "variance": variance.variance,
            "variance_percent": variance.variance_percent,
            "forecast": variance.forecast,
            "status": variance.status,
            "reason": variance.reason,
        }
        return Response(self.OutputSerializer(data).data)


class RunProgressApi(APIView):
    """A training script (or its lead) reports a run's status and units done."""

    class InputSerializer(serializers.Serializer):
        status = serializers.ChoiceField(
            choices=TrainingRun.Status.choices, required=False
        )
        units_done = serializers.DecimalField(
            max_digits=24, decimal_places=2, min_value=0, required=False
        )

        class Meta:
            ref_name = "RunProgressReport"

    class OutputSerializer(serializers.Serializer):
        external_id = serializers.CharField()
        status = serializers.CharField()
        progress_unit = serializers.CharField()
        units_planned = serializers.DecimalField(
            max_digits=24, decimal_places=2, allow_null=True
        )
        units_done = serializers.DecimalField(
            max_digits=24, decimal_places=2, allow_null=True
        )

        class Meta:
            ref_name = "RunProgress"

    serializer_class = InputSerializer

    def post(self, request: Request, slug: str, external_id: str) -> Response:
        project = project_get_for_user(request.user, slug)
        run = get_object_or_404(project.runs, external_id=external_id)
        require_plan_editor(request.user, project)
        given = self.InputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        try:
            run = run_progress_report(run=run, **given.validated_data)
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.message_dict) from None
        return Response(self.OutputSerializer(run).data)


class Conflict(APIException):
    status_code = 409
    default_code = "conflict"


class RunEventApi(APIView):
    """A training run reports itself: `start`, `heartbeat`s, `stop`, each with an
    idempotency key (README, *Run telemetry*). Its cost is estimated from them within
    minutes, until billing data for those days replaces the estimate."""

    class InputSerializer(serializers.Serializer):
        kind = serializers.ChoiceField(choices=RunEvent.Kind.choices)
        idempotency_key = serializers.CharField(max_length=200)
        at = serializers.DateTimeField(required=False)
        gpu_count = serializers.IntegerField(
            min_value=0, max_value=1_000_000, required=False
        )
        gpu_type = serializers.CharField(max_length=60, required=False)
        price_per_gpu_hour = serializers.DecimalField(
            max_digits=12, decimal_places=4, min_value=0, required=False
        )
        units_done = serializers.DecimalField(
            max_digits=24, decimal_places=2, min_value=0, required=False
        )
        unit = serializers.ChoiceField(
            choices=TrainingRun.ProgressUnit.choices, required=False
        )
        rate = serializers.CharField(
            max_length=100,
            required=False,
            help_text="A rate-card entry's name, instead of price_per_gpu_hour.",
        )
        outcome = serializers.ChoiceField(
            choices=[(status, status.label) for status in FINISHED], required=False
        )

        class Meta:
            ref_name = "RunEventReport"

        def validate(self, attrs: dict) -> dict:
            unknown = sorted(set(self.initial_data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {name: ["Unknown field."] for name in unknown}
                )
            if "outcome" in attrs and attrs["kind"] != RunEvent.Kind.STOP:
                raise serializers.ValidationError(
                    {"outcome": ["Only a stop event has an outcome."]}
                )
            return attrs

    class OutputSerializer(serializers.ModelSerializer):
        class Meta:
            model = RunEvent
            ref_name = "RunEvent"
            fields = [
                "id",
                "kind",
                "idempotency_key",
                "at",
                "gpu_count",
                "gpu_type",
                "price_per_gpu_hour",
                "units_done",
                "received_at",
            ]

    serializer_class = InputSerializer
    run_reporters_may = True  # projects.authentication.TokenScope

    def _run(self, request: Request, run_id: int) -> TrainingRun:
        run = get_object_or_404(
            TrainingRun.objects.filter(project__in=projects_visible_to(request.user)),
            pk=run_id,
        )
        token = request.auth
        if isinstance(token, ApiToken) and token.project_id not in (
            None,
            run.project_id,
        ):
            raise PermissionDenied(
                f"This token reports the runs of {token.project} only."
            )
        return run

    @extend_schema(responses=OutputSerializer(many=True))
    def get(self, request: Request, run_id: int) -> Response:
        events = self._run(request, run_id).events.all()
        return Response(self.OutputSerializer(events, many=True).data)

    @extend_schema(responses={201: OutputSerializer})
    def post(self, request: Request, run_id: int) -> Response:
        run = self._run(request, run_id)
        require_plan_editor(request.user, run.project)
        given = self.InputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        try:
            event = run_event_record(run=run, by=request.user, **given.validated_data)
        except EventRefused as refused:
            if refused.conflict:
                raise Conflict(str(refused)) from None
            raise serializers.ValidationError(
                {refused.field or "non_field_errors": [str(refused)]}
            ) from None
        return Response(self.OutputSerializer(event).data, status=201)


class AlertAcknowledgeApi(APIView):
    """Someone is on it, with a note: anyone who sees the alert's project, as on the
    alert's page (`alert_acknowledge`); an alert resolved meanwhile answers 409."""

    class InputSerializer(serializers.Serializer):
        note = serializers.CharField(max_length=2000)

        class Meta:
            ref_name = "AlertAcknowledgement"

    serializer_class = InputSerializer

    @extend_schema(responses={200: AlertListApi.OutputSerializer})
    def post(self, request: Request, pk: int) -> Response:
        alert = alert_get_for_user(request.user, pk)
        given = self.InputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        note = given.validated_data["note"]
        if not alert_acknowledge(alert=alert, user=request.user, note=note):
            raise Conflict("This alert was already resolved.")
        alert.refresh_from_db()
        return Response(AlertListApi.OutputSerializer(alert).data)


def _flat(errors: dict, prefix: str = "") -> Iterator[tuple[str, list]]:
    """Nested errors named as the plan's other refusals are: `lines[0].month`."""
    for key, value in errors.items():
        name = f"{prefix}[{key}]" if str(key).isdigit() else f"{prefix}.{key}"
        if isinstance(value, dict):
            yield from _flat(value, name.lstrip("."))
        else:
            yield name.lstrip("."), value


class PlanLineSerializer(serializers.Serializer):
    month = serializers.DateField(help_text="The first day of the month.")
    category = serializers.CharField(required=False, allow_blank=True)
    amount = serializers.DecimalField(max_digits=16, decimal_places=2)

    class Meta:
        ref_name = "PlanLine"


class PlannedRunSerializer(serializers.Serializer):
    id = serializers.IntegerField(required=False)
    name = serializers.CharField(required=False)
    external_id = serializers.CharField(required=False, allow_blank=True)
    gpu_type = serializers.CharField(required=False)
    gpu_count = serializers.IntegerField(required=False)
    planned_gpu_hours = serializers.DecimalField(
        max_digits=14, decimal_places=2, required=False
    )
    rate_per_gpu_hour = serializers.DecimalField(
        max_digits=12, decimal_places=4, required=False
    )
    currency = serializers.CharField(required=False)
    start_date = serializers.DateField(required=False)
    end_date = serializers.DateField(required=False)
    progress_unit = serializers.CharField(required=False, allow_blank=True)
    units_planned = serializers.DecimalField(
        max_digits=24, decimal_places=2, required=False, allow_null=True
    )

    class Meta:
        ref_name = "PlannedRun"


class PlanApi(APIView):
    """A project's budget, its monthly lines and its planned runs: what the plan page
    edits. A PUT goes through the plan page's own forms and service
    (`budget_save_plan`): the same checks, and a change to an approved budget becomes
    a revision for finance to approve. Fields left out keep their value; `lines`,
    when given, are the whole monthly plan; `runs` are changed by `id` or added
    without one, and runs not given stay as they are."""

    class InputSerializer(serializers.Serializer):
        total = serializers.DecimalField(
            max_digits=16, decimal_places=2, required=False
        )
        currency = serializers.CharField(required=False)
        cost_measure = serializers.CharField(required=False)
        start_date = serializers.DateField(required=False)
        end_date = serializers.DateField(required=False)
        tolerance_percent = serializers.DecimalField(
            max_digits=5, decimal_places=2, required=False
        )
        lines_must_sum_to_total = serializers.BooleanField(required=False)
        lines = serializers.ListField(
            child=PlanLineSerializer(), required=False, allow_empty=True
        )
        runs = serializers.ListField(child=PlannedRunSerializer(), required=False)

        class Meta:
            ref_name = "PlanChange"

    class OutputSerializer(serializers.Serializer):
        project = serializers.CharField()
        status = serializers.CharField(allow_null=True)
        total = serializers.DecimalField(max_digits=16, decimal_places=2)
        currency = serializers.CharField()
        cost_measure = serializers.CharField()
        start_date = serializers.DateField()
        end_date = serializers.DateField()
        tolerance_percent = serializers.DecimalField(max_digits=5, decimal_places=2)
        lines_must_sum_to_total = serializers.BooleanField()
        lines = PlanLineSerializer(many=True)
        runs = PlannedRunSerializer(many=True)
        pending_revision = serializers.IntegerField(allow_null=True)

        class Meta:
            ref_name = "Plan"

    serializer_class = InputSerializer

    @extend_schema(responses=OutputSerializer)
    def get(self, request: Request, slug: str) -> Response:
        project = project_get_for_user(request.user, slug)
        budget = getattr(project, "budget", None)
        if budget is None:
            return Response({"detail": "This project has no budget yet."}, status=404)
        return Response(self._plan(project, budget))

    @extend_schema(request=InputSerializer, responses=OutputSerializer)
    def put(self, request: Request, slug: str) -> Response:
        project = project_get_for_user(request.user, slug)
        require_plan_editor(request.user, project)
        given = self.InputSerializer(data=request.data)
        if not given.is_valid():
            raise serializers.ValidationError(dict(_flat(given.errors)))
        budget = getattr(project, "budget", None) or budget_unsaved(project=project)
        forms = PlanForms(project, budget, given.validated_data)
        if errors := forms.errors():
            raise serializers.ValidationError(errors)
        budget_save_plan(
            budget=forms.budget.instance,
            lines=forms.lines.kept_lines(),
            runs=forms.runs.kept_runs(),
            user=request.user,
        )
        project.refresh_from_db()
        return Response(self._plan(project, project.budget))

    def _plan(self, project: Project, budget: Budget) -> dict:
        snapshot = plan_snapshot(
            budget=budget, lines=budget.lines.all(), runs=project.runs.all()
        )
        pending = budget.revisions.filter(status=BudgetRevision.Status.PENDING)
        return self.OutputSerializer(
            snapshot
            | {
                "project": project.slug,
                "status": budget.status,
                "pending_revision": pending.values_list("pk", flat=True).first(),
            }
        ).data


class AllocationRuleSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(
        slug_field="slug", queryset=Project.objects.none()
    )

    class Meta:
        model = AllocationRule
        fields = [
            "id",
            "project",
            "training_run",
            "priority",
            "match_on",
            "tag_key",
            "value",
            "run_tag_key",
            "is_active",
        ]


@extend_schema(parameters=[PROJECT_FILTER])
class AllocationRuleListApi(ListAPIView):
    """The rules that send costs to the projects the caller sees, in the order they
    are tried; `?project=<slug>` for one project's. Admins add one with POST
    (`allocation_rule_create`): checked as in Django admin and as a new project's
    rule; a worker then gives it the unallocated costs it matches."""

    serializer_class = AllocationRuleSerializer

    def get_queryset(self):
        rules = AllocationRule.objects.filter(
            project__in=projects_visible_to(self.request.user)
        ).select_related("project")
        if project := self.request.query_params.get("project"):
            rules = rules.filter(project__slug=project)
        return rules.order_by("priority", "pk")

    @extend_schema(responses={201: AllocationRuleSerializer})
    def post(self, request: Request) -> Response:
        require_allocation_editor(request.user)
        given = self.get_serializer(data=request.data)
        given.fields["project"].queryset = projects_visible_to(request.user)
        given.is_valid(raise_exception=True)
        try:
            rule = allocation_rule_create(rule=AllocationRule(**given.validated_data))
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.message_dict) from None
        return Response(self.get_serializer(rule).data, status=201)


class BudgetLineSerializer(serializers.ModelSerializer):
    class Meta:
        model = BudgetLine
        fields = ["month", "category", "amount"]


class BudgetSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    lines = BudgetLineSerializer(many=True, read_only=True)

    class Meta:
        model = Budget
        fields = [
            "project",
            "status",
            *PLAN_FIELDS,
            "approved_at",
            "lines",
        ]


@extend_schema(parameters=[PROJECT_FILTER])
class BudgetListApi(ListAPIView):
    """The budgets of the projects the caller sees, with their monthly lines, in
    their own currency; `?project=<slug>` for one project's."""

    serializer_class = BudgetSerializer

    def get_queryset(self):
        budgets = (
            Budget.objects.filter(project__in=projects_visible_to(self.request.user))
            .select_related("project")
            .prefetch_related(Prefetch("lines", BudgetLine.objects.order_by("month")))
        )
        if project := self.request.query_params.get("project"):
            budgets = budgets.filter(project__slug=project)
        return budgets.order_by("project__name", "pk")
