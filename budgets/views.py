from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts.permissions import (
    alert_get_for_user,
    alerts_visible_to,
    project_get_for_user,
    projects_visible_to,
    require_plan_approver,
    require_plan_editor,
    revision_get_for_user,
    teams_visible_to,
    user_can_approve_plans,
    user_can_edit_plan,
)
from budgets.alerts import (
    alert_acknowledge,
    project_alert_rules,
    project_alert_rules_save,
)
from budgets.forms import AcknowledgeForm, AlertRuleForm, RevisionDecisionForm
from budgets.models import Alert, AlertKind, Budget, BudgetRevision
from budgets.services import (
    RevisionRefused,
    budget_approve,
    budget_revision_decide,
    revision_changes,
)

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
        alerts.select_related(
            "project__team", "training_run", "source", "acknowledged_by"
        ).order_by("-fired_at", "-id"),
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
        "notifications": alert.notifications.select_related("user").order_by("user"),
    }
    return render(request, "budgets/alert_detail.html", context)


@login_required
@require_POST
def budget_approve_view(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_get_for_user(request.user, slug)
    require_plan_approver(request.user)
    budget = getattr(project, "budget", None)
    if budget is None or budget.status == Budget.Status.APPROVED:
        messages.info(request, "There is no draft budget to approve.")
    else:
        budget_approve(budget=budget, user=request.user)
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
