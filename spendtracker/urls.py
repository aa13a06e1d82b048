from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, register_converter
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from accounts import views as account_views
from billing import views as billing_views
from budgets import views as budget_views
from core.converters import MonthConverter
from projects import views as project_views
from reports import views as report_views
from spendtracker import views as site_views

register_converter(MonthConverter, "month")

auth_urls = [
    path(
        "login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path(
        "password-reset/",
        account_views.PasswordResetView.as_view(
            email_template_name="registration/password_reset_email.txt",
            html_email_template_name="registration/password_reset_email.html",
            extra_email_context={"site_url": settings.SITE_URL},
        ),
        name="password_reset",
    ),
    path(
        "password-reset/sent/",
        auth_views.PasswordResetDoneView.as_view(),
        name="password_reset_done",
    ),
    path(
        "password-reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "password-reset/done/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
]

urlpatterns = [
    path("", budget_views.dashboard, name="dashboard"),
    path("accounts/", include(auth_urls)),
    path("projects/new/", budget_views.project_new, name="project_new"),
    path("projects/<slug:slug>/", budget_views.project_detail, name="project_detail"),
    path(
        "projects/<slug:slug>/archive/",
        budget_views.project_archive_view,
        name="project_archive",
    ),
    path(
        "projects/<slug:slug>/unarchive/",
        budget_views.project_unarchive_view,
        name="project_unarchive",
    ),
    path("projects/<slug:slug>/plan/", budget_views.budget_edit, name="budget_edit"),
    path(
        "projects/<slug:slug>/approve/",
        budget_views.budget_approve_view,
        name="budget_approve",
    ),
    path(
        "projects/<slug:slug>/revisions/<int:pk>/",
        budget_views.revision_detail,
        name="revision_detail",
    ),
    path(
        "projects/<slug:slug>/runs/<int:pk>/",
        budget_views.run_detail,
        name="run_detail",
    ),
    path(
        "projects/<slug:slug>/alert-rules/",
        budget_views.alert_rules_edit,
        name="alert_rules_edit",
    ),
    path(
        "projects/<slug:slug>/webhooks/",
        budget_views.project_webhooks,
        name="project_webhooks",
    ),
    path(
        "teams/<slug:slug>/webhooks/",
        budget_views.team_webhooks,
        name="team_webhooks",
    ),
    path(
        "webhooks/<int:pk>/test/", budget_views.webhook_test_view, name="webhook_test"
    ),
    path(
        "webhooks/<int:pk>/delete/",
        budget_views.webhook_delete_view,
        name="webhook_delete",
    ),
    path("alerts/", budget_views.alert_list, name="alert_list"),
    path("alerts/<int:pk>/", budget_views.alert_detail, name="alert_detail"),
    path(
        "account/notifications/",
        account_views.notification_settings,
        name="notification_settings",
    ),
    path("account/tokens/", project_views.api_tokens, name="account_tokens"),
    path(
        "account/tokens/<int:pk>/revoke/",
        project_views.api_token_revoke_view,
        name="account_token_revoke",
    ),
    path("teams/", account_views.team_list, name="team_list"),
    path("audit/", account_views.audit_log, name="audit_log"),
    path("teams/<slug:slug>/", budget_views.team_detail, name="team_detail"),
    path("overview/", report_views.organisation_overview, name="overview"),
    path("reports/", report_views.report_list, name="report_list"),
    path(
        "reports/<month:month>/",
        report_views.report_detail,
        name="report_detail",
    ),
    path(
        "reports/<month:month>/report.json",
        report_views.report_json,
        name="report_json",
    ),
    path(
        "reports/<month:month>/close/",
        report_views.month_close_view,
        name="month_close",
    ),
    path(
        "reports/<month:month>/reopen/",
        report_views.month_reopen_view,
        name="month_reopen",
    ),
    path(
        "reports/<month:month>/accruals/",
        report_views.report_accruals_book,
        name="report_accruals_book",
    ),
    *(
        path(
            f"reports/<month:month>/export.{fmt}",
            report_views.report_export,
            {"fmt": fmt},
            name=f"report_export_{fmt}",
        )
        for fmt in report_views.EXPORTS
    ),
    path(
        "reports/<month:month>/files/<int:pk>/",
        report_views.report_file,
        name="report_file",
    ),
    path("costs/", billing_views.cost_explorer, name="cost_explorer"),
    path("costs/export.csv", billing_views.cost_explorer_csv, name="cost_explorer_csv"),
    path("costs/records/", billing_views.cost_records, name="cost_records"),
    path(
        "costs/records/export.csv",
        billing_views.cost_records_csv,
        name="cost_records_csv",
    ),
    path("invoices/", billing_views.invoice_list, name="invoice_list"),
    path("invoices/<int:pk>/", billing_views.invoice_detail, name="invoice_detail"),
    path(
        "invoices/<int:pk>/decision/",
        billing_views.invoice_decide,
        name="invoice_decide",
    ),
    path("billing/sources/", billing_views.source_list, name="source_list"),
    path("billing/sources/new/", billing_views.source_create, name="source_create"),
    path(
        "billing/sources/<int:pk>/edit/",
        billing_views.source_edit,
        name="source_edit",
    ),
    path(
        "billing/sources/<int:pk>/test/",
        billing_views.source_test,
        name="source_test",
    ),
    path(
        "billing/sources/<int:pk>/", billing_views.source_detail, name="source_detail"
    ),
    path(
        "billing/sources/<int:pk>/delete/",
        billing_views.source_delete,
        name="source_delete",
    ),
    path("billing/upload/", billing_views.upload, name="upload"),
    path("billing/imports/", billing_views.import_list, name="import_list"),
    path(
        "billing/imports/<int:pk>/", billing_views.import_detail, name="import_detail"
    ),
    path(
        "billing/imports/<int:pk>/status/",
        billing_views.import_status,
        name="import_status",
    ),
    path("healthz", site_views.health, name="health"),
    path("api/v1/", include("spendtracker.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start script as a file of its own
    # (/api/docs/?script=), as the Content-Security-Policy allows no inline script.
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(url_name="schema"),
        name="api_docs",
    ),
    path("admin/", admin.site.urls),
]
