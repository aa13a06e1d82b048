from datetime import date
from decimal import Decimal

from django import forms
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.forms import BaseInlineFormSet, inlineformset_factory
from django.http import QueryDict

from accounts.models import Membership, Team, User
from budgets.models import PLAN_FIELDS, AlertKind, Budget, BudgetLine, Webhook
from core.currencies import ZERO
from projects.models import RUN_PLAN_FIELDS, AllocationRule, Project, TrainingRun


class MonthField(forms.DateField):
    """A calendar month, entered as YYYY-MM and stored as its first day."""

    widget = forms.DateInput(attrs={"type": "month"}, format="%Y-%m")
    input_formats = ["%Y-%m", "%Y-%m-%d"]

    def to_python(self, value):
        day = super().to_python(value)
        return day.replace(day=1) if isinstance(day, date) else day


class BudgetForm(forms.ModelForm):
    class Meta:
        model = Budget
        fields = list(PLAN_FIELDS)
        widgets = {
            "start_date": forms.DateInput(attrs={"type": "date"}),
            "end_date": forms.DateInput(attrs={"type": "date"}),
            "currency": forms.TextInput(
                attrs={"maxlength": 3, "size": 4, "class": "uppercase"}
            ),
        }

    def clean_currency(self) -> str:
        return self.cleaned_data["currency"].strip().upper()

    def clean_total(self) -> Decimal:
        total = self.cleaned_data["total"]
        if total < 0:
            raise ValidationError("A budget cannot be negative.")
        return total


LINE_FIELDS = ("month", "category", "amount")


class BudgetLineForm(forms.ModelForm):
    month = MonthField()

    class Meta:
        model = BudgetLine
        fields = list(LINE_FIELDS)

    def clean_amount(self) -> Decimal:
        amount = self.cleaned_data["amount"]
        if amount < 0:
            raise ValidationError("A planned amount cannot be negative.")
        return amount


class BaseBudgetLineFormSet(BaseInlineFormSet):
    def kept_lines(self) -> list[dict]:
        """Month, category and amount of every filled-in line not marked for removal."""
        return [
            {field: form.cleaned_data.get(field, "") for field in LINE_FIELDS}
            for form in self.forms
            if form.cleaned_data and not form.cleaned_data.get("DELETE")
        ]

    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        budget: Budget = self.instance
        kept = self.kept_lines()
        seen = set()
        for line in kept:
            key = (line["month"], line.get("category", ""))
            if key in seen:
                raise ValidationError(
                    f"{line['month']:%B %Y} has two lines for the same category."
                )
            seen.add(key)
        planned = sum((line["amount"] for line in kept), ZERO)
        must_sum = budget.lines_must_sum_to_total and budget.total is not None
        if must_sum and planned != budget.total:
            raise ValidationError(
                f"The monthly lines add up to {planned:,.2f} but the total is "
                f"{budget.total:,.2f}. Adjust the lines, or untick "
                f"“Lines must sum to total”."
            )


BudgetLineFormSet = inlineformset_factory(
    Budget,
    BudgetLine,
    form=BudgetLineForm,
    formset=BaseBudgetLineFormSet,
    extra=2,
    can_delete=True,
)


class NewPlanLineFormSet(BudgetLineFormSet):
    """The monthly plan of a new project: room for most of a year at once."""

    extra = 6


class ProjectForm(forms.ModelForm):
    """A new project, for one of the teams the user may create projects for."""

    class Meta:
        model = Project
        fields = ["team", "name", "kind", "start_date", "end_date", "owner"]
        fields += ["description"]
        widgets = {
            "start_date": forms.DateInput(attrs={"type": "date"}),
            "end_date": forms.DateInput(attrs={"type": "date"}),
            "description": forms.Textarea(attrs={"rows": 2}),
        }

    def __init__(self, *args, teams: QuerySet[Team], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams
        self.fields["owner"].queryset = User.objects.filter(
            memberships__team__in=teams, is_active=True
        ).distinct()
        self.fields["owner"].help_text = "A member of the team, who answers for it."
        # Grouped by team, so that the owner is picked among the chosen team's people.
        members = Membership.objects.filter(
            team__in=teams, user__is_active=True
        ).select_related("user", "team")
        groups: dict[str, list[tuple[int, str]]] = {}
        for membership in members.order_by("team__name", "user__full_name"):
            groups.setdefault(membership.team.name, []).append(
                (membership.user.pk, str(membership.user))
            )
        self.fields["owner"].choices = [("", "---------"), *groups.items()]

    def clean(self):
        cleaned = super().clean()
        team, owner = cleaned.get("team"), cleaned.get("owner")
        if team and owner and not owner.memberships.filter(team=team).exists():
            self.add_error("owner", f"{owner} is not a member of {team}.")
        return cleaned


class NewBudgetForm(BudgetForm):
    """The first budget of a new project: it runs over the project's dates."""

    class Meta(BudgetForm.Meta):
        fields = [f for f in PLAN_FIELDS if f not in ("start_date", "end_date")]


RECOGNISED_BY = [
    (kind, label)
    for kind, label in AllocationRule.MatchOn.choices
    if kind != AllocationRule.MatchOn.SERVICE  # a whole service is never one project's
]


class RecognitionForm(forms.Form):
    """How the new project's costs are recognised: its first allocation rule."""

    match_on = forms.ChoiceField(
        label="Costs are recognised by",
        choices=RECOGNISED_BY,
        initial=AllocationRule.MatchOn.TAG,
        widget=forms.RadioSelect,
    )
    tag_key = forms.CharField(
        label="Tag key", max_length=200, required=False, initial="project"
    )
    value = forms.CharField(
        max_length=500,
        required=False,
        help_text="The tag's value, the account id or the resource id prefix; for "
        "a tag, empty means the project's slug (made from its name).",
    )

    def clean(self):
        cleaned = super().clean()
        tag = cleaned.get("match_on") == AllocationRule.MatchOn.TAG
        cleaned["tag_key"] = cleaned.get("tag_key", "").strip() if tag else ""
        cleaned["value"] = cleaned.get("value", "").strip()
        if tag and not cleaned["tag_key"]:
            self.add_error("tag_key", "A tag rule needs the tag key.")
        if not tag and not cleaned["value"]:
            self.add_error("value", "Give the account id or the resource id prefix.")
        return cleaned


class PlannedRunForm(forms.ModelForm):
    class Meta:
        model = TrainingRun
        fields = list(RUN_PLAN_FIELDS)
        labels = {
            "external_id": "Run id in billing tags",
            "gpu_type": "GPU type",
            "gpu_count": "GPUs",
            "planned_gpu_hours": "Planned GPU-hours",
            "rate_per_gpu_hour": "Rate per GPU-hour",
            "progress_unit": "Progress counted in",
        }
        widgets = {
            "start_date": forms.DateInput(attrs={"type": "date"}),
            "end_date": forms.DateInput(attrs={"type": "date"}),
            "currency": forms.TextInput(attrs={"maxlength": 3, "size": 4}),
        }

    def clean_currency(self) -> str:
        return self.cleaned_data["currency"].strip().upper()


class BasePlannedRunFormSet(BaseInlineFormSet):
    def kept_runs(self) -> list[dict]:
        """The plan fields of every filled-in run, with its id when it exists."""
        return [
            {"id": form.instance.pk}
            | {field: form.cleaned_data.get(field) for field in RUN_PLAN_FIELDS}
            for form in self.forms
            if form.cleaned_data
        ]


# Runs are never deleted from here: their spend stays attributed. Cancel one instead.
PlannedRunFormSet = inlineformset_factory(
    Project,
    TrainingRun,
    form=PlannedRunForm,
    formset=BasePlannedRunFormSet,
    extra=1,
    can_delete=False,
)


class RunProgressForm(forms.ModelForm):
    """What a running job reports: its status and the work done so far."""

    class Meta:
        model = TrainingRun
        fields = ["status", "units_done"]


class AcknowledgeForm(forms.Form):
    note = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=2000,
        help_text="What is being done about it; shown to everyone who sees the alert.",
    )


class BudgetApprovalForm(forms.Form):
    """The version of the draft that the approver's page showed."""

    version = forms.IntegerField(min_value=1, widget=forms.HiddenInput)


class RevisionDecisionForm(forms.Form):
    decision = forms.ChoiceField(
        choices=[("approve", "Approve"), ("reject", "Reject")],
        widget=forms.HiddenInput,
    )
    comment = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), max_length=2000, required=False
    )

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("decision") == "reject" and not cleaned.get("comment"):
            self.add_error("comment", "Say why the revision is rejected.")
        return cleaned


class AlertRuleForm(forms.Form):
    """One rule of one project: on or off, and its thresholds (empty: the default)."""

    enabled = forms.BooleanField(required=False)
    thresholds = forms.CharField(required=False, max_length=200)

    def __init__(self, *args, kind: str, default: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.kind = kind
        self.label = AlertKind(kind).label
        self.fields["thresholds"].widget.attrs["placeholder"] = default

    def clean_thresholds(self) -> list[float]:
        text = self.cleaned_data["thresholds"].strip()
        if not text:
            return []
        try:
            values = [float(part) for part in text.replace(";", ",").split(",")]
        except ValueError:
            raise ValidationError(
                "Give numbers separated by commas, e.g. 50, 80, 100."
            ) from None
        if not all(0 < value <= 10_000 for value in values):
            raise ValidationError("Each threshold must be above 0 and at most 10,000.")
        return sorted(int(v) if v.is_integer() else v for v in values)


class WebhookForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="e.g. “#ml-infra alerts”.")
    kind = forms.ChoiceField(choices=Webhook.Kind.choices, initial=Webhook.Kind.SLACK)
    url = forms.URLField(
        max_length=2000,
        label="URL",
        assume_scheme="https",
        help_text="A Slack, Mattermost or Teams incoming-webhook URL, or your own "
        "endpoint for signed JSON. Kept encrypted; only its host is shown.",
    )


class PlanForms:
    """The plan page's forms (the budget, its monthly lines, the planned runs) filled
    from a plan given as data, as the API takes it: what the data leaves out keeps
    its value; `lines`, when given, are the whole monthly plan (a month left out is
    removed); `runs` are changed by `id` or added without one. The forms' checks are
    the plan page's; `errors()` names each failing field as `lines[2].amount`."""

    def __init__(self, project: Project, budget: Budget, given: dict) -> None:
        data = QueryDict(mutable=True)
        for name in PLAN_FIELDS:
            _put(data, name, given[name] if name in given else getattr(budget, name))
        self.line_given = self._lines_data(data, budget, given.get("lines"))
        self.run_given = self._runs_data(data, project, given.get("runs"))
        self.budget = BudgetForm(data, instance=budget)
        self.lines = BudgetLineFormSet(data, instance=budget, prefix="lines")
        self.runs = PlannedRunFormSet(data, instance=project, prefix="runs")

    def _lines_data(
        self, data: QueryDict, budget: Budget, given: list[dict] | None
    ) -> list[int | None]:
        """Each existing line is kept with the amount given for its month and
        category, or removed; other given lines are added. Returns the given index
        of each form."""
        existing = list(budget.lines.all()) if budget.pk else []
        if given is None:
            given = [
                {name: getattr(line, name) for name in LINE_FIELDS} for line in existing
            ]
        index: dict[tuple[date, str], int] = {}
        for n, line in enumerate(given):
            index.setdefault((_month(line["month"]), line.get("category") or ""), n)
        rows: list[tuple[dict, int | None]] = []
        for line in existing:
            n = index.get((line.month, line.category))
            current = {"id": line.pk} | {
                name: getattr(line, name) for name in LINE_FIELDS
            }
            change = given[n] if n is not None else {"DELETE": True}
            rows.append((current | change, n))
        # The rest are added: a second line of a month is refused by the formset.
        kept = {n for _, n in rows}
        rows += [(line, n) for n, line in enumerate(given) if n not in kept]
        _formset_put(data, "lines", rows, initial=len(existing))
        return [n for _, n in rows]

    def _runs_data(
        self, data: QueryDict, project: Project, given: list[dict] | None
    ) -> list[int | None]:
        existing = list(project.runs.all())
        ids = {run.pk for run in existing}
        by_id: dict[int, int] = {}
        self.run_errors: dict[str, list[str]] = {}
        for n, run in enumerate(given or []):
            if run.get("id") is None:
                continue
            if run["id"] not in ids:
                self.run_errors[f"runs[{n}].id"] = ["No such run in this project."]
            elif run["id"] in by_id:
                self.run_errors[f"runs[{n}].id"] = ["This run is given twice."]
            else:
                by_id[run["id"]] = n
        rows: list[tuple[dict, int | None]] = []
        for run in existing:
            n = by_id.get(run.pk)
            current = {"id": run.pk} | {
                name: getattr(run, name) for name in RUN_PLAN_FIELDS
            }
            rows.append((current | (given[n] if n is not None else {}), n))
        rows += [(run, n) for n, run in enumerate(given or []) if run.get("id") is None]
        _formset_put(data, "runs", rows, initial=len(existing))
        return [n for _, n in rows]

    def errors(self) -> dict[str, list[str]]:
        """Nothing when every form is valid; else the messages by field."""
        valid = [self.budget.is_valid(), self.lines.is_valid(), self.runs.is_valid()]
        if all(valid) and not self.run_errors:
            return {}
        errors = {
            ("non_field_errors" if name == "__all__" else name): list(messages)
            for name, messages in self.budget.errors.items()
        } | self.run_errors
        for prefix, formset, given in (
            ("lines", self.lines, self.line_given),
            ("runs", self.runs, self.run_given),
        ):
            for form, n in zip(formset.forms, given, strict=False):
                row = prefix if n is None else f"{prefix}[{n}]"
                for name, messages in form.errors.items():
                    field = "" if name == "__all__" else f".{name}"
                    errors[f"{row}{field}"] = list(messages)
            if formset.non_form_errors():
                errors[prefix] = list(formset.non_form_errors())
        return errors


def _month(value: date | str) -> date:
    day = value if isinstance(value, date) else date.fromisoformat(str(value))
    return day.replace(day=1)


def _put(data: QueryDict, name: str, value) -> None:
    """A value as a form posts it: booleans as a ticked box, or nothing."""
    if value is True:
        data[name] = "on"
    elif value is not None and value is not False:
        data[name] = value.isoformat() if isinstance(value, date) else str(value)


def _formset_put(
    data: QueryDict, prefix: str, rows: list[tuple[dict, int | None]], *, initial: int
) -> None:
    data[f"{prefix}-TOTAL_FORMS"] = str(len(rows))
    data[f"{prefix}-INITIAL_FORMS"] = str(initial)
    for number, (fields, _) in enumerate(rows):
        for name, value in fields.items():
            _put(data, f"{prefix}-{number}-{name}", value)
