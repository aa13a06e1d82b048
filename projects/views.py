from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone

from accounts.permissions import (
    project_get_for_user,
    projects_visible_to,
    require_plan_editor,
    user_can_edit_plan,
)
from budgets import selectors
from budgets.forms import BudgetForm, BudgetLineFormSet
from budgets.models import Budget
from budgets.services import (
    budget_save_plan,
    project_cumulative_by_month,
    project_summary,
    run_variance,
)

STATUS_ORDER = {"over": 0, "at_risk": 1, "on_track": 2, "no_budget": 3}


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    today = timezone.now().date()
    projects = projects_visible_to(request.user).select_related("team", "budget")
    summaries = sorted(
        (project_summary(project=p, as_of=today) for p in projects),
        key=lambda s: (STATUS_ORDER[s.status], s.project.name),
    )
    counts = {status: 0 for status in STATUS_ORDER}
    for summary in summaries:
        counts[summary.status] += 1
    context = {
        "summaries": summaries,
        "counts": counts,
        "today": today,
    }
    if request.user.sees_everything:
        context["unallocated_month"] = selectors.actual_between(
            start=today.replace(day=1), project__isnull=True
        )
    return render(request, "projects/dashboard.html", context)


@login_required
def project_detail(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_get_for_user(request.user, slug)
    today = timezone.now().date()
    budget: Budget | None = getattr(project, "budget", None)
    measure = budget.cost_measure if budget else "effective_cost"
    tolerance = budget.tolerance_percent if budget else 0
    runs = [
        (
            run,
            run_variance(run=run, as_of=today, tolerance=tolerance),
            selectors.gpu_hours_between(training_run=run),
        )
        for run in project.runs.all()
    ]
    context = {
        "project": project,
        "budget": budget,
        "summary": project_summary(project=project, as_of=today),
        "chart": project_cumulative_by_month(project=project, as_of=today)
        if budget
        else None,
        "lines": budget.lines.all() if budget else [],
        "runs": runs,
        "by_provider": selectors.spend_breakdown(
            measure=measure, group_by="provider_name", project=project
        ),
        "by_service": selectors.spend_breakdown(
            measure=measure, group_by="service_name", project=project
        ),
        "provisional": selectors.actual_between(
            measure=measure, project=project, is_provisional=True
        ),
        "rules": project.allocation_rules.select_related("training_run"),
        "can_edit": user_can_edit_plan(request.user, project),
        "invoices": project.compute_invoices.all(),
        "unconverted": selectors.unconverted_totals(project=project),
    }
    return render(request, "projects/project_detail.html", context)


@login_required
def budget_edit(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_get_for_user(request.user, slug)
    require_plan_editor(request.user, project)
    budget = getattr(project, "budget", None) or Budget(
        project=project,
        currency=settings.REPORTING_CURRENCY,
        start_date=project.start_date,
        end_date=project.end_date,
    )
    form = BudgetForm(request.POST or None, instance=budget)
    lines = BudgetLineFormSet(request.POST or None, instance=form.instance)
    if request.method == "POST" and form.is_valid() and lines.is_valid():
        budget_save_plan(form=form, lines=lines)
        messages.success(request, "Plan saved. Finance will review the change.")
        return redirect(project)
    return render(
        request,
        "projects/budget_edit.html",
        {"project": project, "form": form, "lines": lines},
    )
