from django.urls import path

from budgets.api import (
    AlertAcknowledgeApi,
    AlertListApi,
    ProjectVarianceApi,
    RunEventApi,
    RunProgressApi,
)
from projects.api import ProjectListApi

urlpatterns = [
    path("projects/", ProjectListApi.as_view(), name="api_project_list"),
    path(
        "projects/<slug:slug>/variance/",
        ProjectVarianceApi.as_view(),
        name="api_project_variance",
    ),
    path(
        "projects/<slug:slug>/runs/<str:external_id>/progress/",
        RunProgressApi.as_view(),
        name="api_run_progress",
    ),
    path("runs/<int:run_id>/events/", RunEventApi.as_view(), name="api_run_events"),
    path("alerts/", AlertListApi.as_view(), name="api_alert_list"),
    path(
        "alerts/<int:pk>/acknowledge/",
        AlertAcknowledgeApi.as_view(),
        name="api_alert_acknowledge",
    ),
]
