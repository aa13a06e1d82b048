from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.generics import ListAPIView, RetrieveAPIView

from projects.models import Project, TrainingRun
from projects.selectors import (
    project_get_for_user,
    projects_visible_to,
    runs_visible_to,
)

PROJECT_FILTER = OpenApiParameter(
    "project", str, description="A project's slug: only its rows."
)


class ProjectSerializer(serializers.ModelSerializer):
    team = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    owner = serializers.EmailField(source="owner.email", read_only=True)

    class Meta:
        model = Project
        fields = [
            "slug",
            "name",
            "team",
            "owner",
            "kind",
            "status",
            "description",
            "start_date",
            "end_date",
            "archived_at",
        ]


class ProjectListApi(ListAPIView):
    """The projects the caller can see, archived ones too (`archived_at` set)."""

    serializer_class = ProjectSerializer

    def get_queryset(self):
        return (
            projects_visible_to(self.request.user)
            .select_related("team", "owner")
            .order_by("name", "pk")
        )


class ProjectDetailApi(RetrieveAPIView):
    serializer_class = ProjectSerializer

    def get_object(self) -> Project:
        return project_get_for_user(self.request.user, self.kwargs["slug"])


class TrainingRunSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "project",
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
            "progress_unit",
            "units_planned",
            "units_done",
        ]


@extend_schema(parameters=[PROJECT_FILTER])
class TrainingRunListApi(ListAPIView):
    """The runs of the projects the caller sees; `?project=<slug>` for one project's."""

    serializer_class = TrainingRunSerializer

    def get_queryset(self):
        runs = runs_visible_to(self.request.user).select_related("project")
        if project := self.request.query_params.get("project"):
            runs = runs.filter(project__slug=project)
        return runs.order_by("start_date", "pk")


class TrainingRunDetailApi(RetrieveAPIView):
    serializer_class = TrainingRunSerializer
    lookup_url_kwarg = "run_id"

    def get_queryset(self):
        return runs_visible_to(self.request.user).select_related("project")
