from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.forms import Form
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts.permissions import (
    require_plan_approver,
    require_plan_editor,
    require_project_creator,
    teams_user_can_create_projects_for,
    user_can_approve_plans,
    user_can_edit_plan,
)
from accounts.selectors import team_get_for_user, teams_visible_to
from billing.explorer import spend_span
from budgets import selectors
from budgets.alerts import (
    ACTIVE,
    alert_acknowledge,
    project_alert_rules,
    project_alert_rules_save,
    project_waiting_reason,
)
from budgets.forms import (
    AcknowledgeForm,
    AlertRuleForm,
    BudgetApprovalForm,
    BudgetForm,
    BudgetLineFormSet,
    NewBudgetForm,
    NewPlanLineFormSet,
    PlanForms,
    PlannedRunFormSet,
    ProjectForm,
    RecognitionForm,
    RevisionDecisionForm,
    RunProgressForm,
    WebhookForm,
)
from budgets.models import (
    Alert,
    AlertKind,
    Budget,
    BudgetLine,
    BudgetRevision,
    Webhook,
    WebhookDelivery,
)
from budgets.selectors import (
    alert_get_for_user,
    alerts_visible_to,
    revision_get_for_user,
)
from budgets.services import (
    ApprovalRefused,
    Recognition,
    RevisionRefused,
    budget_approve,
    budget_preview,
    budget_revision_decide,
    budget_save_plan,
    budget_unsaved,
    project_create,
    project_cumulative_by_month,
    project_months,
    project_summaries,
    project_summary,
    revision_changes,
    run_progress_report,
    run_summaries,
    team_variance,
)
from budgets.telemetry import run_telemetry
from budgets.webhooks import (
    WebhookScope,
    require_webhook_editor,
    webhook_create,
    webhook_delete,
    webhook_test,
)
from projects.selectors import (
    project_get_for_user,
    projects_visible_to,
    run_get_for_user,
)
from projects.services import project_archive, project_unarchive

# What an alert row shows of its acknowledgements: the latest note and who wrote it.
ACKNOWLEDGEMENTS = "acknowledgements__user"

STATUS_FILTERS = {
    "active": ("Open and acknowledged", [Alert.Status.OPEN, Alert.Status.ACKNOWLEDGED]),
    "open": ("Open", [Alert.Status.OPEN]),
    "acknowledged": ("Acknowledged", [Alert.Status.ACKNOWLEDGED]),
    "resolved": ("Resolved", [Alert.Status.RESOLVED]),
    "all": ("All", list(Alert.Status)),
}


@login_required
def alert_list(request: HttpRequest) -> HttpResponse:
    status = request.GET.get("status", "active")
    status = status if status in STATUS_FILTERS else "active"
    alerts = alerts_visible_to(request.user).filter(
        status__in=STATUS_FILTERS[status][1]
    )
    kind = request.GET.get("kind", "")
    if kind in AlertKind.values:
        alerts = alerts.filter(kind=kind)
    team = request.GET.get("team", "")
    if team:
        alerts = alerts.filter(project__team__slug=team)
    project = request.GET.get("project", "")
    if project:
        alerts = alerts.filter(project__slug=project)
    page = Paginator(
        selectors.alerts_worst_first(
            alerts.select_related(
                "project__team", "training_run", "source"
            ).prefetch_related(ACKNOWLEDGEMENTS)
        ),
        50,
    ).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "status": status,
        "status_label": STATUS_FILTERS[status][0],
        "status_filters": {key: label for key, (label, _) in STATUS_FILTERS.items()},
        "kind": kind,
        "kinds": AlertKind.choices,
        "team": team,
        "teams": teams_visible_to(request.user),
        "project": project,
        "projects": projects_visible_to(request.user).only("slug", "name"),
    }
    return render(request, "budgets/alert_list.html", context)


@login_required
def alert_detail(request: HttpRequest, pk: int) -> HttpResponse:
    alert = alert_get_for_user(request.user, pk)
    form = AcknowledgeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if alert_acknowledge(
            alert=alert, user=request.user, note=form.cleaned_data["note"]
        ):
            messages.success(
                request, "Alert acknowledged. Everyone on it sees your note."
            )
        else:
            messages.info(request, "This alert was already resolved.")
        return redirect(alert)
    history = []
    earlier = alert.escalated_from
    while earlier is not None and len(history) < 10:
        history.append(earlier)
        earlier = earlier.escalated_from
    context = {
        "alert": alert,
        "form": form,
        "history": history,
        "acknowledgements": alert.acknowledgements.select_related("user"),
        "notifications": alert.notifications.select_related("user").order_by("user"),
    }
    return render(request, "budgets/alert_detail.html", context)


@login_required
@require_POST
def budget_approve_view(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_get_for_user(request.user, slug)
    require_plan_approver(request.user)
    budget = getattr(project, "budget", None)
    form = BudgetApprovalForm(request.POST)
    if budget is None or budget.status == Budget.Status.APPROVED:
        messages.info(request, "There is no draft budget to approve.")
    elif not form.is_valid():
        messages.error(
            request, "Approve from the project's page, which shows the draft."
        )
    else:
        try:
            budget_approve(
                budget=budget, user=request.user, version=form.cleaned_data["version"]
            )
        except ApprovalRefused as error:
            messages.error(request, str(error))
        else:
            messages.success(request, f"The budget of {project.name} is approved.")
    return redirect(project)


@login_required
def revision_detail(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    revision = revision_get_for_user(request.user, slug, pk)
    project = revision.budget.project
    form = RevisionDecisionForm(request.POST or None)
    if request.method == "POST":
        require_plan_approver(request.user)
        if form.is_valid():
            approve = form.cleaned_data["decision"] == "approve"
            try:
                budget_revision_decide(
                    revision=revision,
                    user=request.user,
                    approve=approve,
                    comment=form.cleaned_data["comment"],
                )
            except RevisionRefused as error:
                messages.error(request, str(error))
            else:
                verdict = "approved: the plan has changed" if approve else "rejected"
                messages.success(request, f"Revision {verdict}.")
            return redirect(project)
    context = {
        "project": project,
        "revision": revision,
        "changes": revision_changes(revision),
        "form": form,
        "can_decide": user_can_approve_plans(request.user)
        and revision.status == BudgetRevision.Status.PENDING,
    }
    return render(request, "budgets/revision_detail.html", context)


@login_required
def alert_rules_edit(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_get_for_user(request.user, slug)
    can_edit = user_can_edit_plan(request.user, project)
    rules = project_alert_rules(project)
    data = request.POST or None
    forms = [
        AlertRuleForm(
            data,
            prefix=rule.kind,
            kind=rule.kind,
            default=rule.default,
            initial={
                "enabled": rule.enabled,
                "thresholds": ", ".join(str(v) for v in rule.thresholds),
            },
        )
        for rule in rules
    ]
    if request.method == "POST":
        require_plan_editor(request.user, project)
        if all(form.is_valid() for form in forms):
            project_alert_rules_save(
                project=project,
                settings={
                    form.kind: (
                        form.cleaned_data["enabled"],
                        form.cleaned_data["thresholds"],
                    )
                    for form in forms
                },
            )
            messages.success(
                request, "Alert rules saved; they apply from the next evaluation."
            )
            return redirect("alert_rules_edit", slug=project.slug)
    context = {
        "project": project,
        "rows": list(zip(rules, forms, strict=True)),
        "can_edit": can_edit,
    }
    return render(request, "budgets/alert_rules.html", context)


@login_required
def team_detail(request: HttpRequest, slug: str) -> HttpResponse:
    team = team_get_for_user(request.user, slug)
    today = timezone.now().date()
    summaries = project_summaries(
        projects=team.projects.filter(archived_at__isnull=True).select_related("owner"),
        as_of=today,
    )
    context = {
        "team": team,
        "archived": team.projects.filter(archived_at__isnull=False),
        "can_create_project": teams_user_can_create_projects_for(request.user)
        .filter(pk=team.pk)
        .exists(),
        "can_edit_webhooks": user_can_edit_plan(request.user, WebhookScope(team=team)),
        "summaries": summaries,
        "totals": team_variance(summaries),
        "memberships": team.memberships.select_related("user").order_by("role"),
        "last_30_days": selectors.actual_between(
            start=today - timedelta(days=29), project__team=team
        ),
    }
    return render(request, "accounts/team_detail.html", context)


STATUS_ORDER = {"over": 0, "at_risk": 1, "on_track": 2, "no_budget": 3}


DASHBOARD_CARDS = 24


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    today = timezone.now().date()
    # Archived projects leave the dashboard; the filter shows them, and only them.
    archived = request.GET.get("archived") == "1"
    projects = list(
        projects_visible_to(request.user)
        .filter(archived_at__isnull=not archived)
        .select_related("team")
    )
    alert_counts = selectors.alert_counts_by(
        alerts_visible_to(request.user).filter(project__in=projects), "project"
    )
    summaries = sorted(
        project_summaries(projects=projects, as_of=today),
        key=lambda s: (STATUS_ORDER[s.status], s.project.name),
    )
    counts = {status: 0 for status in STATUS_ORDER}
    for summary in summaries:
        counts[summary.status] += 1
    # Worst first, a page at a time: the first page is what needs attention, and an
    # organisation's hundreds of cards are not drawn at once.
    page = Paginator(summaries, DASHBOARD_CARDS).get_page(request.GET.get("page"))
    context = {
        "cards": [
            (s, alert_counts.get(s.project.pk, selectors.AlertCounts()))
            for s in page.object_list
        ],
        "page": page,
        "summaries": summaries,
        "counts": counts,
        "alert_counts": selectors.alert_counts(alerts_visible_to(request.user)),
        "today": today,
        "month_start": today.replace(day=1),
        "archived": archived,
        "can_create_project": teams_user_can_create_projects_for(request.user).exists(),
    }
    if user_can_approve_plans(request.user):
        # What waits for finance's decision, and not by this user (nobody decides
        # their own): revisions of approved plans, and draft budgets.
        context["pending_revisions"] = list(
            BudgetRevision.objects.filter(status=BudgetRevision.Status.PENDING)
            .exclude(proposed_by=request.user)
            .select_related("budget__project")
            .order_by("proposed_at")
        )
        context["drafts"] = list(
            Budget.objects.filter(
                status=Budget.Status.DRAFT, project__archived_at__isnull=True
            )
            .exclude(authors=request.user)
            .select_related("project")
            .order_by("project__name")
        )
    if request.user.sees_everything:
        context["unallocated_month"] = selectors.actual_between(
            start=today.replace(day=1),
            end=today + timedelta(days=1),
            project__isnull=True,
        )
    return render(request, "projects/dashboard.html", context)


@login_required
def project_detail(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_get_for_user(request.user, slug)
    today = timezone.now().date()
    summary = project_summary(project=project, as_of=today)
    budget: Budget | None = summary.budget
    measure = budget.cost_measure if budget else "effective_cost"
    # The days that the explorer links of figures without dates cover.
    first_day, last_day = spend_span(project=project) or (today, today)
    context = {
        "project": project,
        "budget": budget,
        "summary": summary,
        "measure": measure,
        "today": today,
        "spend_from": min(first_day, today),
        "spend_through": last_day,
        "chart": project_cumulative_by_month(project=project, as_of=today)
        if budget
        else None,
        "months": project_months(project=project, as_of=today) if budget else [],
        "runs": run_summaries(runs=project.runs.all(), as_of=today),
        "by_provider": selectors.spend_breakdown(
            measure=measure, group_by="provider_name", project=project
        ),
        "by_service": selectors.spend_breakdown(
            measure=measure, group_by="service_name", project=project
        ),
        "rules": project.allocation_rules.select_related("training_run"),
        "can_edit": user_can_edit_plan(request.user, project),
        "can_approve": user_can_approve_plans(request.user),
        "wrote_draft": budget is not None
        and budget.authors.filter(pk=request.user.pk).exists(),
        "invoices": project.compute_invoices.all(),
        "unconverted": selectors.unconverted_totals(project=project),
        "alerts": selectors.alerts_worst_first(
            project.alerts.filter(status__in=ACTIVE)
            .select_related("training_run")
            .prefetch_related(ACKNOWLEDGEMENTS)
        ),
        "alert_counts": selectors.alert_counts(project.alerts.all()),
        "waiting": project_waiting_reason(project),
        "revisions": BudgetRevision.objects.filter(budget__project=project)
        .select_related("proposed_by", "decided_by")
        .order_by("-proposed_at", "-id"),
    }
    return render(request, "projects/project_detail.html", context)


@login_required
def run_detail(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    run = run_get_for_user(request.user, slug, pk)
    project = run.project
    can_edit = user_can_edit_plan(request.user, project)
    form = RunProgressForm(request.POST or None, instance=run)
    if request.method == "POST":
        require_plan_editor(request.user, project)
        if form.is_valid():
            run_progress_report(run=run, **form.cleaned_data)
            messages.success(request, "Progress saved.")
            return redirect("run_detail", slug=project.slug, pk=run.pk)
    today = timezone.now().date()
    summary = run_summaries(runs=[run], as_of=today)[0]
    budget = getattr(project, "budget", None)
    measure = budget.cost_measure if budget else "effective_cost"
    first_day, _ = spend_span(training_run=run) or (today, today)
    daily = selectors.actual_by_day(
        measure=measure,
        start=run.start_date,
        end=min(run.end_date, today) + timedelta(days=1),
        training_run=run,
    )
    context = {
        "project": project,
        "run": run,
        "summary": summary,
        "ev": summary.earned_value,
        "ev_text": summary.earned_value.explanation(run.currency)
        if summary.earned_value
        else "",
        "daily": [(f"{day:%-d %b}", amount) for day, amount in sorted(daily.items())],
        "measure": measure,
        "today": today,
        "spend_from": min(first_day, today),
        "form": form,
        "can_edit": can_edit,
        "alerts": run.alerts.filter(status__in=ACTIVE).prefetch_related(
            ACKNOWLEDGEMENTS
        ),
        "telemetry": run_telemetry(run),
    }
    return render(request, "projects/run_detail.html", context)


@login_required
def budget_edit(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_get_for_user(request.user, slug)
    require_plan_editor(request.user, project)
    budget = getattr(project, "budget", None) or budget_unsaved(project=project)
    data = request.POST or None
    form = BudgetForm(data, instance=budget)
    lines = BudgetLineFormSet(data, instance=form.instance)
    runs = PlannedRunFormSet(data, instance=project, prefix="runs")
    preview = None
    valid = data is not None and all(
        [form.is_valid(), lines.is_valid(), runs.is_valid()]
    )
    if valid and "preview" in request.POST:
        preview = budget_preview(
            project=project,
            budget=form.instance,
            lines=[BudgetLine(**line) for line in lines.kept_lines()],
            as_of=timezone.now().date(),
        )
    elif valid:
        saved = budget_save_plan(
            budget=form.instance,
            lines=lines.kept_lines(),
            runs=runs.kept_runs(),
            user=request.user,
            reason=request.POST.get("reason", "")[:2000],
        )
        if saved.revision:
            messages.success(
                request,
                "Your change is a revision of the approved plan: finance will "
                "approve or reject it. The approved plan applies until then.",
            )
        else:
            messages.success(request, "Plan saved.")
        return redirect(project)
    current = project_summary(project=project, as_of=timezone.now().date()).variance
    pending = (
        budget.revisions.filter(status=BudgetRevision.Status.PENDING).first()
        if budget.pk
        else None
    )
    if pending is not None and data is None:
        # A change made while a revision waits starts from that proposal, not from
        # the approved plan: saving replaces the proposal, so nothing of it is lost.
        start = PlanForms(project, budget, pending.proposal)
        form, lines, runs = start.budget, start.lines, start.runs
    context = {
        "project": project,
        "form": form,
        "lines": lines,
        "runs": runs,
        "preview": preview,
        "current": current,
        "pending": pending,
    }
    return render(request, "projects/budget_edit.html", context)


@login_required
def project_new(request: HttpRequest) -> HttpResponse:
    """A lead creates a project for a team they lead (finance and admins for any):
    its first budget, a draft for finance to approve, and how its costs are
    recognised."""
    team = None
    if slug := request.GET.get("team"):
        team = team_get_for_user(request.user, slug)
    require_project_creator(request.user, team)
    teams = teams_user_can_create_projects_for(request.user)
    data = request.POST or None
    form = ProjectForm(
        data,
        teams=teams,
        initial={"team": team or teams.first(), "owner": request.user},
    )
    budget_form = NewBudgetForm(
        data, prefix="budget", initial={"currency": settings.REPORTING_CURRENCY}
    )
    lines = NewPlanLineFormSet(data, instance=budget_form.instance, prefix="lines")
    recognition = RecognitionForm(data, prefix="recognition")
    forms = [form, budget_form, lines, recognition]
    if data is not None and all([f.is_valid() for f in forms]):
        try:
            project = project_create(
                project=form.instance,
                budget=budget_form.instance,
                lines=lines.kept_lines(),
                recognition=Recognition(**recognition.cleaned_data),
                user=request.user,
            )
        except ValidationError as error:
            _add_errors(error, [form, recognition])
        else:
            messages.success(
                request,
                f"{project.name} is created. Its budget waits for finance's "
                "approval; costs already imported that its rule matches are being "
                "allocated to it.",
            )
            return redirect(project)
    context = {
        "form": form,
        "budget_form": budget_form,
        "lines": lines,
        "recognition": recognition,
    }
    return render(request, "projects/project_new.html", context)


def _add_errors(error: ValidationError, forms: list[Form]) -> None:
    """Show a service's refusal on the form that has the field it names."""
    for field, messages_ in error.message_dict.items():
        form = next((f for f in forms if field in f.fields), forms[0])
        form.add_error(field if field in form.fields else None, messages_)


@login_required
@require_POST
def project_archive_view(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_get_for_user(request.user, slug)
    require_plan_editor(request.user, project)
    if project_archive(project=project):
        messages.success(
            request,
            f"{project.name} is archived: it has left the dashboard and its alerts; "
            "its pages and reports stay.",
        )
    else:
        messages.info(request, f"{project.name} was already archived.")
    return redirect(project)


@login_required
@require_POST
def project_unarchive_view(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_get_for_user(request.user, slug)
    require_plan_editor(request.user, project)
    if project_unarchive(project=project):
        messages.success(request, f"{project.name} is back on the dashboard.")
    else:
        messages.info(request, f"{project.name} was not archived.")
    return redirect(project)


# Webhooks ---------------------------------------------------------------------------

WEBHOOK_LOG_ROWS = 50


@login_required
def project_webhooks(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_get_for_user(request.user, slug)
    return _webhooks_page(request, WebhookScope(team=project.team, project=project))


@login_required
def team_webhooks(request: HttpRequest, slug: str) -> HttpResponse:
    return _webhooks_page(
        request, WebhookScope(team=team_get_for_user(request.user, slug))
    )


def _webhooks_page(request: HttpRequest, scope: WebhookScope) -> HttpResponse:
    require_webhook_editor(request.user, scope)
    form = WebhookForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            webhook = webhook_create(
                user=request.user, scope=scope, **form.cleaned_data
            )
        except ValidationError as refused:
            form.add_error(None, refused)
        else:
            messages.success(
                request,
                f"“{webhook.name}” will hear of {scope.name}'s alerts. Send it a test.",
            )
            return redirect(request.path)
    hooks = scope.webhooks.order_by("name", "pk")
    log = (
        WebhookDelivery.objects.filter(webhook__in=hooks)
        .select_related("webhook", "alert")
        .order_by("-created_at", "-pk")[:WEBHOOK_LOG_ROWS]
    )
    context = {"scope": scope, "form": form, "webhooks": hooks, "log": log}
    return render(request, "budgets/webhooks.html", context)


def _webhook_and_scope(request: HttpRequest, pk: int) -> tuple[Webhook, WebhookScope]:
    webhook = get_object_or_404(
        Webhook.objects.select_related("project", "team"), pk=pk
    )
    if webhook.project is not None:
        project = project_get_for_user(request.user, webhook.project.slug)
        return webhook, WebhookScope(team=project.team, project=project)
    team = team_get_for_user(request.user, webhook.team.slug)
    return webhook, WebhookScope(team=team)


def _webhooks_url(scope: WebhookScope) -> str:
    if scope.project is not None:
        return reverse("project_webhooks", args=[scope.project.slug])
    return reverse("team_webhooks", args=[scope.team.slug])


@login_required
@require_POST
def webhook_test_view(request: HttpRequest, pk: int) -> HttpResponse:
    webhook, scope = _webhook_and_scope(request, pk)
    webhook_test(user=request.user, webhook=webhook, scope=scope)
    messages.success(
        request, f"A test message to “{webhook.name}” is queued: see the log below."
    )
    return redirect(_webhooks_url(scope))


@login_required
@require_POST
def webhook_delete_view(request: HttpRequest, pk: int) -> HttpResponse:
    webhook, scope = _webhook_and_scope(request, pk)
    webhook_delete(user=request.user, webhook=webhook, scope=scope)
    messages.success(request, f"“{webhook.name}” is deleted, with its log.")
    return redirect(_webhooks_url(scope))
