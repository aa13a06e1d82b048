"""Demo data that tells a story on the dashboard.

Costs enter the way production data does: FOCUS-shaped CostRecords from a billing
source, allocated by tag rules and rolled up by the billing services. Running it again
replaces the demo source's records and updates everything else in place, so nothing
duplicates.
"""

import random
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.db import transaction
from django.db.models import Min
from django.utils import timezone
from django.utils.text import slugify

from accounts.models import Membership, Team, User
from billing.allocation import Allocator
from billing.invoices import compute_invoices_load
from billing.models import (
    BillingSource,
    ComputeInvoice,
    ComputeInvoiceLine,
    CostRecord,
    FxRate,
)
from billing.services import daily_costs_rebuild
from budgets.alerts import alerts_evaluate
from budgets.models import Budget, BudgetLine
from core.dates import month_start, next_month
from projects.models import AllocationRule, Project, TrainingRun

DEMO_PASSWORD = "demo1234"
DEMO_SOURCE = "Demo FOCUS export"
CENT = Decimal("0.01")

DEMO_USERS = [
    ("lead@example.com", "Lena Ortiz", User.Role.STANDARD),
    ("member@example.com", "Max Becker", User.Role.STANDARD),
    ("finance@example.com", "Fatima Noor", User.Role.FINANCE),
    ("admin@example.com", "Ada Admin", User.Role.ADMIN),
    ("priya@example.com", "Priya Raman", User.Role.STANDARD),
    ("sam@example.com", "Sam Keller", User.Role.STANDARD),
]

DEMO_TEAMS = [
    (
        "Foundation Models",
        "foundation-models",
        "lead@example.com",
        ["member@example.com"],
    ),
    ("Applied ML", "applied-ml", "priya@example.com", []),
    ("Research", "research", "sam@example.com", []),
]
# Cost centre and GL account of each team in the chargeback journal; Research has
# none yet, so the journal shows a team line without one.
DEMO_CHARGEBACK = {
    "foundation-models": ("CC-4100", "6420"),
    "applied-ml": ("CC-4200", "6420"),
}


@dataclass
class Service:
    provider: str
    name: str
    category: str
    share: Decimal
    account: str
    currency: str = "USD"
    gpu_rate: Decimal | None = None  # cost per GPU-hour when the service is GPU time


@dataclass
class DemoRun:
    name: str
    external_id: str
    gpu_type: str
    gpu_count: int
    planned_gpu_hours: Decimal
    rate: Decimal
    start_offset: int  # months before the current month
    months: int
    # Progress the run reports, for earned value: (unit, units planned, percent done).
    progress: tuple[str, int, int] | None = None


@dataclass
class DemoProject:
    name: str
    slug: str
    team: str
    kind: str
    monthly_plan: list[int]  # oldest month first, ending with the project's last month
    start_offset: int  # months before the current month the project starts
    start_day: int = 1
    # How actual spend compares with plan, per month (same length as monthly_plan).
    factors: list[int] = field(default_factory=list)  # percent of plan
    services: list[Service] = field(default_factory=list)
    runs: list[DemoRun] = field(default_factory=list)
    recent_surge: int = 100  # percent applied to the last seven days (a burn spike)
    status: str = Project.Status.ACTIVE


AWS_GPU = Service(
    "AWS",
    "Amazon EC2",
    "Compute",
    Decimal("0.82"),
    "1234567890",
    gpu_rate=Decimal("2.49"),
)
AWS_S3 = Service("AWS", "Amazon S3", "Storage", Decimal("0.18"), "1234567890")
OPENAI = Service(
    "OpenAI", "OpenAI API", "AI and Machine Learning", Decimal("1"), "org-demo"
)
ANTHROPIC = Service(
    "Anthropic",
    "Claude API",
    "AI and Machine Learning",
    Decimal("0.6"),
    "anthropic-demo",
)
COREWEAVE = Service(
    "CoreWeave",
    "GPU Compute",
    "Compute",
    Decimal("0.4"),
    "cw-demo",
    gpu_rate=Decimal("2.21"),
)
COREWEAVE_TRAINING = replace(COREWEAVE, share=Decimal("0.82"))
SCALEWAY = Service(
    "Scaleway", "Object Storage", "Storage", Decimal("1"), "scw-demo", currency="EUR"
)
LAMBDA_GPU = Service(
    "Lambda",
    "GPU Cloud",
    "Compute",
    Decimal("1"),
    "lambda-demo",
    gpu_rate=Decimal("1.99"),
)

DEMO_PROJECTS = [
    DemoProject(
        "Atlas-13B pre-training",
        "atlas-13b-pretraining",
        "foundation-models",
        Project.Kind.PRE_TRAINING,
        monthly_plan=[40_000, 90_000, 120_000, 120_000, 110_000, 80_000, 40_000],
        factors=[105, 120, 135, 150, 160, 170, 170],
        start_offset=5,
        services=[AWS_GPU, AWS_S3],
        runs=[
            DemoRun(
                "atlas-13b-main",
                "atlas-main-01",
                "H100 80GB",
                128,
                Decimal("180000"),
                Decimal("2.49"),
                4,
                5,
                progress=("tokens", 300_000_000_000, 62),
            ),
            DemoRun(
                "atlas-13b-ablations",
                "atlas-abl-02",
                "H100 80GB",
                32,
                Decimal("12000"),
                Decimal("2.49"),
                5,
                1,
            ),
        ],
    ),
    DemoProject(
        "Support-bot LoRA",
        "support-bot-lora",
        "foundation-models",
        Project.Kind.PEFT,
        monthly_plan=[6_000, 9_000, 9_000, 8_000],
        factors=[70, 60, 65, 60],
        start_offset=2,
        start_day=10,
        services=[LAMBDA_GPU],
        runs=[
            DemoRun(
                "support-lora-r16",
                "sb-lora-r16",
                "A100 80GB",
                8,
                Decimal("9000"),
                Decimal("1.99"),
                2,
                3,
            )
        ],
    ),
    DemoProject(
        "Chat inference",
        "chat-inference",
        "foundation-models",
        Project.Kind.INFERENCE,
        monthly_plan=[20_000] * 7 + [22_000] * 2,
        factors=[98, 102, 100, 97, 103, 100, 99, 100, 100],
        start_offset=6,
        services=[OPENAI],
    ),
    DemoProject(
        "Model evals",
        "model-evals",
        "foundation-models",
        Project.Kind.EVALUATION,
        monthly_plan=[5_000] * 10,
        factors=[100, 105, 110, 115, 120, 125, 125, 125, 125, 125],
        start_offset=6,
        services=[ANTHROPIC, COREWEAVE],
    ),
    DemoProject(
        "Code-assist fine-tune",
        "code-assist-ft",
        "applied-ml",
        Project.Kind.FINE_TUNING,
        monthly_plan=[15_000, 30_000, 30_000, 20_000, 15_000],
        factors=[90, 95, 100, 90, 100],
        start_offset=3,
        services=[COREWEAVE_TRAINING, AWS_S3],
        runs=[
            DemoRun(
                "code-ft-7b",
                "code-ft-7b",
                "H100 80GB",
                32,
                Decimal("22000"),
                Decimal("2.21"),
                2,
                2,
                progress=("steps", 40_000, 71),
            )
        ],
    ),
    DemoProject(
        "Data curation pipeline",
        "data-curation",
        "applied-ml",
        Project.Kind.DATA,
        monthly_plan=[4_000] * 9,
        factors=[90] * 9,
        start_offset=6,
        services=[SCALEWAY],
    ),
    DemoProject(
        "RLHF experiments",
        "rlhf-experiments",
        "research",
        Project.Kind.FINE_TUNING,
        monthly_plan=[12_000, 12_000, 12_000, 12_000, 12_000],
        factors=[95, 100, 90, 100, 100],
        start_offset=3,
        services=[COREWEAVE, ANTHROPIC],
        recent_surge=260,
    ),
    DemoProject(
        "Speech eval harness",
        "speech-eval",
        "research",
        Project.Kind.EVALUATION,
        monthly_plan=[3_000, 3_000, 3_000],
        factors=[95, 97, 90],
        start_offset=6,
        services=[OPENAI],
        status=Project.Status.COMPLETED,
    ),
]

UNALLOCATED_DAILY = Decimal("310")


def _shift_months(day: date, months: int) -> date:
    """The first day of the month `months` after (or before, if negative) `day`'s."""
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


@transaction.atomic
def demo_seed(*, today: date) -> dict[str, int]:
    # The demo's morning sync and evaluation: 06:00 UTC, or now if it is earlier, so
    # that nothing has happened in the future.
    morning = min(datetime.combine(today, time(6), tzinfo=UTC), timezone.now())
    users = _users()
    teams = _teams(users)
    source, _ = BillingSource.objects.update_or_create(
        name=DEMO_SOURCE,
        defaults={
            "kind": BillingSource.Kind.FOCUS,
            "data_complete_through": datetime.combine(
                month_start(today), time(), tzinfo=UTC
            ),
            "last_sync_at": morning,
        },
    )
    FxRate.objects.update_or_create(
        currency="EUR",
        date=_shift_months(today, -12),
        defaults={"rate": Decimal("1.08")},
    )
    projects = [_project(spec, teams, users, today) for spec in DEMO_PROJECTS]
    replaced = CostRecord.objects.filter(source=source)
    # Rebuild the rollup wherever old demo records were, not only the new range:
    # seeding again in a later month must not leave last time's oldest days behind.
    oldest = replaced.aggregate(first=Min("charge_period_start"))["first"]
    replaced.delete()
    allocator = Allocator()
    records = []
    for spec, project in zip(DEMO_PROJECTS, projects, strict=True):
        records += _project_costs(spec, project, source, today)
    records += _unallocated_costs(source, today)
    for record in records:
        allocation = allocator.allocate(record.__dict__)
        record.project_id = allocation.project_id
        record.training_run_id = allocation.training_run_id
    CostRecord.objects.bulk_create(records, batch_size=2000)
    first_day = _shift_months(today, -6)
    if oldest:
        first_day = min(first_day, oldest.date())
    daily_costs_rebuild(start=first_day, end=today + timedelta(days=1))
    _invoices(Project.objects.get(slug="support-bot-lora"), today)
    compute_invoices_load()  # the approved one counts, as it would once approved
    finance = users["finance@example.com"]
    finance.watched_teams.set(teams.values())
    alerts_evaluate(now=morning)
    return {
        "users": len(users),
        "projects": len(projects),
        "cost_records": len(records),
    }


def _users() -> dict[str, User]:
    users = {}
    for email, name, role in DEMO_USERS:
        user, _ = User.objects.update_or_create(
            email=email,
            defaults={
                "full_name": name,
                "role": role,
                "is_active": True,
            },
        )
        user.set_password(DEMO_PASSWORD)
        user.save(update_fields=["password"])
        users[email] = user
    return users


def _teams(users: dict[str, User]) -> dict[str, Team]:
    teams = {}
    for name, slug, lead, members in DEMO_TEAMS:
        cost_centre, gl_account = DEMO_CHARGEBACK.get(slug, ("", ""))
        team, _ = Team.objects.update_or_create(
            slug=slug,
            defaults={
                "name": name,
                "cost_centre": cost_centre,
                "gl_account": gl_account,
            },
        )
        Membership.objects.update_or_create(
            user=users[lead], team=team, defaults={"role": Membership.Role.LEAD}
        )
        for email in members:
            Membership.objects.update_or_create(
                user=users[email], team=team, defaults={"role": Membership.Role.MEMBER}
            )
        teams[slug] = team
    return teams


def _project(spec: DemoProject, teams, users, today: date) -> Project:
    team = teams[spec.team]
    owner = team.memberships.get(role=Membership.Role.LEAD).user
    first_month = _shift_months(today, -spec.start_offset)
    start = first_month.replace(day=spec.start_day)
    end = _shift_months(first_month, len(spec.monthly_plan)) - timedelta(days=1)
    project, _ = Project.objects.update_or_create(
        slug=spec.slug,
        defaults={
            "name": spec.name,
            "team": team,
            "owner": owner,
            "kind": spec.kind,
            "status": spec.status,
            "start_date": start,
            "end_date": end,
            "description": f"Demo: {spec.name}.",
        },
    )
    budget, _ = Budget.objects.update_or_create(
        project=project,
        defaults={
            "total": Decimal(sum(spec.monthly_plan)),
            "currency": "USD",
            "start_date": start,
            "end_date": end,
            "status": Budget.Status.APPROVED,
            "approved_by": User.objects.get(email="finance@example.com"),
            "approved_at": datetime.combine(start, time(9), tzinfo=UTC),
        },
    )
    budget.lines.exclude(
        month__in=[_shift_months(first_month, i) for i in range(len(spec.monthly_plan))]
    ).delete()
    for index, amount in enumerate(spec.monthly_plan):
        BudgetLine.objects.update_or_create(
            budget=budget,
            month=_shift_months(first_month, index),
            category="",
            defaults={"amount": Decimal(amount)},
        )
    for run in spec.runs:
        run_start = _shift_months(today, -run.start_offset)
        run_end = _shift_months(run_start, run.months) - timedelta(days=1)
        TrainingRun.objects.update_or_create(
            project=project,
            external_id=run.external_id,
            defaults={
                "name": run.name,
                "gpu_type": run.gpu_type,
                "gpu_count": run.gpu_count,
                "planned_gpu_hours": run.planned_gpu_hours,
                "rate_per_gpu_hour": run.rate,
                "currency": "USD",
                "start_date": run_start,
                "end_date": run_end,
                "status": TrainingRun.Status.COMPLETED
                if run_end < today
                else TrainingRun.Status.RUNNING,
                **_progress(run),
            },
        )
    AllocationRule.objects.update_or_create(
        project=project,
        match_on=AllocationRule.MatchOn.TAG,
        tag_key="project",
        value=spec.slug,
        defaults={"priority": 100, "run_tag_key": "training_run" if spec.runs else ""},
    )
    return project


def _progress(run: DemoRun) -> dict:
    if run.progress is None:
        return {"progress_unit": "", "units_planned": None, "units_done": None}
    unit, planned, percent = run.progress
    return {
        "progress_unit": unit,
        "units_planned": Decimal(planned),
        "units_done": Decimal(planned * percent // 100),
    }


def _project_costs(
    spec: DemoProject, project: Project, source, today: date
) -> list[CostRecord]:
    records = []
    runs = {r.external_id: r for r in project.runs.all()}
    day = project.start_date
    last = min(project.end_date, today)
    while day <= last:
        month_index = (
            (day.year - project.start_date.year) * 12
            + day.month
            - project.start_date.month
        )
        month_days = (next_month(day) - max(month_start(day), project.start_date)).days
        planned_daily = Decimal(spec.monthly_plan[month_index]) / month_days
        factor = Decimal(spec.factors[month_index]) / 100
        if (today - day).days < 7:
            factor *= Decimal(spec.recent_surge) / 100
        # Day-to-day wobble of ±15%, the same on every run for the same day.
        noise = Decimal(random.Random(f"{spec.slug}{day}").randint(850, 1150)) / 1000
        for service in spec.services:
            amount = (planned_daily * factor * noise * service.share).quantize(
                CENT, ROUND_HALF_UP
            )
            run = _active_run(runs, day) if service.gpu_rate else None
            records.append(
                _record(
                    source,
                    service,
                    day,
                    amount,
                    today,
                    {
                        "project": spec.slug,
                        "team": spec.team,
                        **({"training_run": run.external_id} if run else {}),
                    },
                )
            )
        day += timedelta(days=1)
    return records


def _active_run(runs: dict[str, TrainingRun], day: date) -> TrainingRun | None:
    for run in runs.values():
        if run.start_date <= day <= run.end_date:
            return run
    return None


def _unallocated_costs(source, today: date) -> list[CostRecord]:
    shared = Service(
        "AWS",
        "AWS Support (Business)",
        "Management and Governance",
        Decimal("1"),
        "1234567890",
    )
    day = _shift_months(today, -2)
    records = []
    while day <= today:
        records.append(
            _record(source, shared, day, UNALLOCATED_DAILY, today, {"team": "platform"})
        )
        day += timedelta(days=1)
    return records


def _record(
    source, service: Service, day: date, amount: Decimal, today: date, tags: dict
) -> CostRecord:
    start = datetime.combine(day, time(), tzinfo=UTC)
    period_start = datetime.combine(month_start(day), time(), tzinfo=UTC)
    currency_amount = amount
    if service.currency == "EUR":
        currency_amount = (amount / Decimal("1.08")).quantize(CENT, ROUND_HALF_UP)
    gpu_hours = (
        (currency_amount / service.gpu_rate).quantize(Decimal("0.001"))
        if service.gpu_rate
        else None
    )
    return CostRecord(
        source=source,
        billing_account_id=service.account,
        billing_account_name=f"{service.provider} demo account",
        sub_account_id=f"{service.account}-ml",
        billing_period_start=period_start,
        billing_period_end=datetime.combine(next_month(day), time(), tzinfo=UTC),
        charge_period_start=start,
        charge_period_end=start + timedelta(days=1),
        charge_category="Usage",
        charge_frequency="Usage-Based",
        charge_description=f"{service.name} usage",
        billed_cost=currency_amount,
        effective_cost=currency_amount,
        list_cost=(currency_amount * Decimal("1.25")).quantize(CENT),
        contracted_cost=currency_amount,
        billing_currency=service.currency,
        provider_name=service.provider,
        publisher_name=service.provider,
        invoice_issuer_name=service.provider,
        service_name=service.name,
        service_category=service.category,
        region_id="us-east-1" if service.provider == "AWS" else "",
        resource_id="/".join(
            [service.account, tags.get("project", "shared"), slugify(service.name)]
        ),
        consumed_quantity=gpu_hours,
        consumed_unit="GPU-Hours" if gpu_hours is not None else "",
        tags=tags,
        is_provisional=month_start(day) == month_start(today),
    )


def _invoices(project: Project, today: date) -> None:
    run = project.runs.order_by("start_date").first()
    for offset, number, status, hours in [
        (2, "LMB-2041", ComputeInvoice.Status.APPROVED, Decimal("2240")),
        (1, "LMB-2107", ComputeInvoice.Status.DRAFT, Decimal("2795")),
    ]:
        period_start = _shift_months(today, -offset)
        invoice, _ = ComputeInvoice.objects.update_or_create(
            vendor="Lambda",
            invoice_number=number,
            defaults={
                "issued_on": _shift_months(today, -offset + 1) + timedelta(days=3),
                "period_start": period_start,
                "period_end": _shift_months(period_start, 1) - timedelta(days=1),
                "currency": "USD",
                "status": status,
                "project": project,
                "training_run": run,
            },
        )
        invoice.lines.all().delete()
        ComputeInvoiceLine.objects.create(
            invoice=invoice,
            description="On-demand 8x A100 80GB instances",
            gpu_type="A100 80GB",
            gpu_hours=hours,
            rate=Decimal("1.99"),
            amount=hours * Decimal("1.99"),
        )
        ComputeInvoiceLine.objects.create(
            invoice=invoice,
            description="Persistent filesystem, 4 TB",
            amount=Decimal("92.00"),
        )
