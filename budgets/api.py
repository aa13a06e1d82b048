from rest_framework import serializers
from rest_framework.generics import ListAPIView

from accounts.permissions import alerts_visible_to
from budgets.models import Alert

ACTIVE = [Alert.Status.OPEN, Alert.Status.ACKNOWLEDGED]


class AlertListApi(ListAPIView):
    """The caller's alerts, newest first; `?status=open|acknowledged|resolved|all`
    (default: open and acknowledged), `?project=<slug>`."""

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

        class Meta:
            ref_name = "Alert"

    serializer_class = OutputSerializer

    def get_queryset(self):
        alerts = alerts_visible_to(self.request.user).select_related(
            "project", "training_run"
        )
        status = self.request.query_params.get("status", "active")
        if status in Alert.Status.values:
            alerts = alerts.filter(status=status)
        elif status != "all":
            alerts = alerts.filter(status__in=ACTIVE)
        if project := self.request.query_params.get("project"):
            alerts = alerts.filter(project__slug=project)
        return alerts.order_by("-fired_at", "-id")
