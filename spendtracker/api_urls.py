from django.urls import path

from projects.api import ProjectListApi, ProjectVarianceApi

urlpatterns = [
    path("projects/", ProjectListApi.as_view(), name="api_project_list"),
    path(
        "projects/<slug:slug>/variance/",
        ProjectVarianceApi.as_view(),
        name="api_project_variance",
    ),
]
