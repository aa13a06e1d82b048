from django.urls import path

from accounts.api import TeamDetailApi, TeamListApi
from billing.api import (
    BillingSourceDetailApi,
    BillingSourceListApi,
    ComputeInvoiceDetailApi,
    ComputeInvoiceListApi,
    CostRecordListApi,
    DailyCostListApi,
    ImportRunDetailApi,
    ImportRunListApi,
)
from budgets.api import (
    AlertAcknowledgeApi,
    AlertListApi,
    AllocationRuleListApi,
    BudgetListApi,
    PlanApi,
    ProjectVarianceApi,
    RunEventApi,
    RunProgressApi,
)
from projects.api import (
    ProjectDetailApi,
    ProjectListApi,
    TrainingRunDetailApi,
    TrainingRunListApi,
)
from reports.api import MonthlyReportApi

urlpatterns = [
    path("teams/", TeamListApi.as_view(), name="api_team_list"),
    path("teams/<slug:slug>/", TeamDetailApi.as_view(), name="api_team_detail"),
    path("projects/", ProjectListApi.as_view(), name="api_project_list"),
    path(
        "projects/<slug:slug>/", ProjectDetailApi.as_view(), name="api_project_detail"
    ),
    path(
        "projects/<slug:slug>/variance/",
        ProjectVarianceApi.as_view(),
        name="api_project_variance",
    ),
    path("projects/<slug:slug>/plan/", PlanApi.as_view(), name="api_project_plan"),
    path(
        "projects/<slug:slug>/runs/<str:external_id>/progress/",
        RunProgressApi.as_view(),
        name="api_run_progress",
    ),
    path("budgets/", BudgetListApi.as_view(), name="api_budget_list"),
    path("runs/", TrainingRunListApi.as_view(), name="api_run_list"),
    path("runs/<int:run_id>/", TrainingRunDetailApi.as_view(), name="api_run_detail"),
    path("runs/<int:run_id>/events/", RunEventApi.as_view(), name="api_run_events"),
    path(
        "allocation-rules/",
        AllocationRuleListApi.as_view(),
        name="api_allocation_rule_list",
    ),
    path("sources/", BillingSourceListApi.as_view(), name="api_source_list"),
    path(
        "sources/<int:pk>/", BillingSourceDetailApi.as_view(), name="api_source_detail"
    ),
    path("imports/", ImportRunListApi.as_view(), name="api_import_list"),
    path("imports/<int:pk>/", ImportRunDetailApi.as_view(), name="api_import_detail"),
    path("cost-records/", CostRecordListApi.as_view(), name="api_cost_record_list"),
    path("daily-costs/", DailyCostListApi.as_view(), name="api_daily_cost_list"),
    path("invoices/", ComputeInvoiceListApi.as_view(), name="api_invoice_list"),
    path(
        "invoices/<int:pk>/",
        ComputeInvoiceDetailApi.as_view(),
        name="api_invoice_detail",
    ),
    path("alerts/", AlertListApi.as_view(), name="api_alert_list"),
    path(
        "alerts/<int:pk>/acknowledge/",
        AlertAcknowledgeApi.as_view(),
        name="api_alert_acknowledge",
    ),
    path(
        "reports/<month:month>/", MonthlyReportApi.as_view(), name="api_monthly_report"
    ),
]
