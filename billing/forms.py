from datetime import date

from django import forms
from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, SkipFile

from accounts.models import User
from accounts.selectors import teams_visible_to
from billing.endpoints import (
    EndpointRefused,
    configured_endpoint,
    endpoint_check,
    endpoint_config_key,
)
from billing.explorer import (
    DEFAULT_DAILY_DAYS,
    DIMENSIONS,
    GRAINS,
    MEASURES,
    NONE,
    TAG_PREFIX,
    ExplorerQuery,
    default_grain,
    range_error,
)
from billing.importers import IMPORTERS
from billing.models import BillingSource
from billing.services import NewSource
from core.crypto import NO_KEY, keys_set
from core.currencies import validate_currency_code
from core.dates import month_start
from projects.models import TrainingRun
from projects.selectors import projects_visible_to

FORMAT_CHOICES = [("auto", "Detect from the header")] + [
    (
        name,
        BillingSource.Kind(name).label if name in BillingSource.Kind.values else name,
    )
    for name in sorted(IMPORTERS)
]


class UploadLimitHandler(FileUploadHandler):
    """First of FILE_UPLOAD_HANDLERS: a request that says it is heavier than
    UPLOAD_MAX_MB has its files skipped as they arrive, never written to disk; its
    other fields are read, and the upload page says why (`upload_too_heavy`)."""

    def handle_raw_input(
        self, input_data, META, content_length, boundary, encoding=None
    ) -> None:
        self.too_heavy = content_length > settings.UPLOAD_MAX_MB << 20
        if self.too_heavy and self.request is not None:
            self.request.upload_weight = content_length  # type: ignore[attr-defined]

    def new_file(self, *args, **kwargs) -> None:
        if self.too_heavy:
            raise SkipFile

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


def upload_too_heavy(weight: int, files: int = 0) -> str:
    """Why an upload of `weight` bytes is refused: its `files`, or the request (0)."""
    what = {0: "This upload weighs", 1: "This file weighs"}.get(
        files, "These files weigh"
    )
    return (
        f"{what} {-(-weight >> 20):,} MB, over the {settings.UPLOAD_MAX_MB:,} MB an "
        "upload may weigh: upload the export compressed (CSV.gz, zip), or split it by "
        "month."
    )


class MultipleFileInput(forms.FileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files in one field, as Django's documentation shows."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None) -> list:
        clean_one = super().clean
        files = data if isinstance(data, list | tuple) else [data]
        # None when nothing was chosen: FileField says the field is required.
        return [clean_one(file, initial) for file in files or [None]]


NEW_SOURCE = "new"
# The kinds a file can be imported as: those with an importer.
UPLOAD_KINDS = [
    (kind.value, kind.label) for kind in BillingSource.Kind if kind in IMPORTERS
]


class UploadForm(forms.Form):
    """An upload goes to a source chosen from the list, or to a new one created on
    purpose with its name and kind: a typed name never creates a source by mistake."""

    file = MultipleFileField(
        label="Files",
        help_text="One delivery: every file of the period (CSV, CSV.gz, Parquet or "
        "JSON, as the provider exports them), or a zip of them.",
    )
    source = forms.ChoiceField(label="Source")
    new_source_name = forms.CharField(
        label="Name of the new source", max_length=100, required=False
    )
    new_source_kind = forms.ChoiceField(
        label="Kind of the new source", choices=UPLOAD_KINDS, required=False
    )
    file_format = forms.ChoiceField(
        choices=FORMAT_CHOICES, initial="auto", label="Format"
    )
    period = forms.DateField(
        label="Billing month",
        required=False,
        input_formats=["%Y-%m"],
        widget=forms.DateInput(attrs={"type": "month"}, format="%Y-%m"),
        help_text="Only for a month without charges: its delivery has no cost rows.",
    )
    currency = forms.CharField(
        label="Currency",
        max_length=3,
        required=False,
        help_text="Only for a FOCUS file without a BillingCurrency column, e.g. USD.",
    )
    allow_overlap = forms.BooleanField(
        required=False,
        label="Import even if another source holds the same data",
        help_text="An import whose files, or billing accounts and periods, another "
        "source already holds is refused, so that nothing counts twice.",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["source"].choices = [
            ("", "Choose a source…"),
            *(
                (str(pk), name)
                for pk, name in BillingSource.objects.values_list("pk", "name")
            ),
            (NEW_SOURCE, "A new source…"),
        ]

    def clean_source(self) -> BillingSource | str:
        chosen = self.cleaned_data["source"]
        if chosen == NEW_SOURCE:
            return NEW_SOURCE
        source = BillingSource.objects.filter(pk=chosen).first()
        if source is None:  # deleted since the page was drawn
            raise forms.ValidationError("That source no longer exists: choose another.")
        return source

    def clean_currency(self) -> str:
        currency = self.cleaned_data["currency"].strip().upper()
        if currency:
            validate_currency_code(currency)
        return currency

    def clean(self) -> dict:
        cleaned = super().clean()
        if cleaned.get("source") != NEW_SOURCE:
            return cleaned
        name = cleaned.get("new_source_name", "").strip()
        if not name:
            self.add_error("new_source_name", "Name the new source.")
        if not cleaned.get("new_source_kind"):
            self.add_error("new_source_kind", "Choose what kind of source it is.")
        return cleaned

    def upload_source(self) -> BillingSource | NewSource:
        """The chosen source, or the new one to create."""
        source = self.cleaned_data["source"]
        if source != NEW_SOURCE:
            return source
        return NewSource(
            name=self.cleaned_data["new_source_name"].strip(),
            kind=self.cleaned_data["new_source_kind"],
        )

    def clean_file(self) -> list:
        files = self.cleaned_data["file"]
        names = [file.name for file in files]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise forms.ValidationError(
                f"{repeated[0]} is chosen twice: a delivery takes each file once."
            )
        # A request that said its weight was refused before (UploadLimitHandler);
        # one that did not is refused here, once on disk, and nothing of it is kept.
        weight = sum(file.size or 0 for file in files)
        if weight > settings.UPLOAD_MAX_MB << 20:
            raise forms.ValidationError(upload_too_heavy(weight, len(files)))
        return files


class TagFilterInput(forms.TextInput):
    """A tag filter may repeat in the query string: ?tag=team=a&tag=env=prod."""

    def value_from_datadict(self, data, files, name):
        return [value for value in data.getlist(name) if value.strip()]

    def format_value(self, value):
        return ""  # the template shows one input per tag filter


class TagFilterField(forms.Field):
    widget = TagFilterInput

    def to_python(self, value) -> list[tuple[str, str | None]]:
        tags = []
        for text in value or []:
            key, equals, tag_value = text.partition("=")
            if not equals or not key.strip():
                raise forms.ValidationError(
                    "Write a tag filter as key=value, e.g. team=research; "
                    f"key={NONE} for costs without that tag. Got: %(text)s",
                    params={"text": text},
                )
            tags.append((key.strip(), None if tag_value == NONE else tag_value))
        return tags


MODEL_FILTERS = ("team", "project", "run", "source")


class ExplorerForm(forms.Form):
    """The explorer's question, from the query string: the dates (both inclusive),
    what to measure and group by, and any filters. Teams, projects and runs are
    those the user sees; a filter naming another is refused, as one naming nothing.
    """

    start = forms.DateField(
        label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    end = forms.DateField(
        label="To (inclusive)", widget=forms.DateInput(attrs={"type": "date"})
    )
    group_by = forms.ChoiceField(
        label="Group by",
        choices=[(d.name, d.label) for d in DIMENSIONS.values()]
        + [("tag", "Tag key…")],
    )
    tag_key = forms.CharField(
        label="Tag key",
        required=False,
        max_length=200,
        strip=False,
        help_text="With Group by: Tag key…, e.g. team or cost-center.",
    )
    measure = forms.ChoiceField(
        label="Measure", choices=[(n, m.label) for n, m in MEASURES.items()]
    )
    grain = forms.ChoiceField(
        label="Chart by",
        choices=[("", "Automatic")] + list(GRAINS.items()),
        help_text=f"Automatic: days for up to {DEFAULT_DAILY_DAYS} days, else months.",
        required=False,
    )
    team = forms.CharField(label="Team", required=False)
    project = forms.CharField(label="Project", required=False)
    run = forms.CharField(label="Training run", required=False)
    source = forms.CharField(label="Billing source", required=False)
    provider = forms.CharField(label="Provider", required=False, strip=False)
    service = forms.CharField(label="Service", required=False, strip=False)
    service_category = forms.CharField(
        label="Service category", required=False, strip=False
    )
    charge_category = forms.CharField(
        label="Charge category", required=False, strip=False
    )
    provisional = forms.ChoiceField(
        label="Provisional",
        required=False,
        choices=[
            ("", "Provisional and final"),
            ("yes", "Provisional"),
            ("no", "Final"),
        ],
    )
    region = forms.CharField(label="Region", required=False, strip=False)
    sub_account = forms.CharField(label="Sub-account", required=False, strip=False)
    resource = forms.CharField(label="Resource", required=False, strip=False)
    tag = TagFilterField(label="Tags", required=False)

    def __init__(self, data, *, user: User, today: date) -> None:
        data = data.copy()
        # A link may say group_by=tag:<key>; the form asks for the key apart.
        if data.get("group_by", "").startswith(TAG_PREFIX):
            data["tag_key"] = data["group_by"].removeprefix(TAG_PREFIX)
            data["group_by"] = "tag"
        defaults = {
            "start": month_start(today).isoformat(),
            "end": today.isoformat(),
            "group_by": "service",
            "measure": "effective",
        }
        for name, value in defaults.items():
            if not data.get(name):
                data[name] = value
        super().__init__(data)
        self.user = user
        self.fields["team"].widget = forms.Select(choices=self._team_choices())
        self.fields["project"].widget = forms.Select(choices=self._project_choices())
        self.fields["run"].widget = forms.Select(choices=self._run_choices())
        self.fields["source"].widget = forms.Select(choices=self._source_choices())

    def _unallocated(self, label: str) -> list[tuple[str, str]]:
        return [(NONE, label)] if self.user.sees_everything else []

    def _team_choices(self) -> list[tuple[str, str]]:
        teams = teams_visible_to(self.user).values_list("slug", "name")
        return [("", "All teams"), *self._unallocated("Unallocated"), *teams]

    def _project_choices(self) -> list[tuple[str, str]]:
        projects = projects_visible_to(self.user).values_list("slug", "name")
        return [("", "All projects"), *self._unallocated("Unallocated"), *projects]

    def _run_choices(self) -> list[tuple[str, str]]:
        runs = TrainingRun.objects.filter(
            project__in=projects_visible_to(self.user)
        ).select_related("project")
        named = [(str(run.pk), f"{run.project} · {run.name}") for run in runs]
        return [("", "All runs"), (NONE, "No run"), *named]

    def _source_choices(self) -> list[tuple[str, str]]:
        sources = BillingSource.objects.values_list("pk", "name")
        return [("", "All sources"), *((str(pk), name) for pk, name in sources)]

    def _visible(self, name: str, value: str):
        rows = {
            "team": (teams_visible_to(self.user), "slug"),
            "project": (projects_visible_to(self.user), "slug"),
            "run": (
                TrainingRun.objects.filter(
                    project__in=projects_visible_to(self.user)
                ).select_related("project"),
                "pk",
            ),
            "source": (BillingSource.objects.all(), "pk"),
        }
        queryset, key = rows[name]
        if key == "pk" and not value.isdigit():
            return None
        return queryset.filter(**{key: value}).first()

    def _clean_model_filter(self, name: str):
        value = self.cleaned_data[name].strip()
        hides_unallocated = not self.user.sees_everything
        if value == NONE and name in ("team", "project") and hides_unallocated:
            raise forms.ValidationError(
                "Unallocated spend is shown to finance and admins only."
            )
        if value in ("", NONE):
            return value
        found = self._visible(name, value)
        if found is None:
            label = DIMENSIONS[name].label.lower()
            raise forms.ValidationError(
                f"No {label} “{value}” that you can see.", code="unknown"
            )
        return found

    def clean_team(self):
        return self._clean_model_filter("team")

    def clean_project(self):
        return self._clean_model_filter("project")

    def clean_run(self):
        return self._clean_model_filter("run")

    def clean_source(self):
        return self._clean_model_filter("source")

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("group_by") == "tag" and not cleaned.get("tag_key", "").strip():
            self.add_error("tag_key", "Name the tag key to group by.")
        start, end = cleaned.get("start"), cleaned.get("end")
        if start and end:
            problem = range_error(start, end, cleaned.get("grain") or None)
            if problem:
                raise forms.ValidationError(problem, code="range")
        return cleaned

    def query(self) -> ExplorerQuery:
        data = self.cleaned_data
        start, end = data["start"], data["end"]
        filters: list[tuple[str, object]] = []
        for name, dimension in DIMENSIONS.items():
            value = data.get(name)
            if value in ("", None):
                continue
            if dimension.boolean:
                filters.append((name, value == "yes"))
            elif value == NONE:
                filters.append((name, None if name in MODEL_FILTERS else ""))
            else:
                filters.append((name, value))
        group_by = data["group_by"]
        if group_by == "tag":
            group_by = f"{TAG_PREFIX}{data['tag_key'].strip()}"
        return ExplorerQuery(
            start=start,
            end=end,
            measure=data["measure"],
            group_by=group_by,
            grain=data.get("grain") or default_grain(start, end),
            filters=tuple(filters),
            tags=tuple(data.get("tag") or ()),
        )


ENDPOINT_CHANGED = (
    "The source's endpoint or kind changed, so its stored credentials were removed: "
    "enter them again for the new endpoint."
)


class BillingSourceForm(forms.ModelForm):
    """Credentials are write-only: typed in as JSON, stored encrypted, shown masked.
    They go only to an endpoint the source may use (billing.endpoints); a changed
    endpoint or kind clears them, so that they never follow a new address unasked."""

    new_credentials = forms.JSONField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "autocomplete": "off"}),
        help_text='Replace the stored credentials, e.g. {"api_key": "sk-admin-..."}. '
        "Leave empty to keep them. Stored encrypted; never shown in full.",
    )

    class Meta:
        model = BillingSource
        fields = ["name", "kind", "is_enabled", "config", "sync_every_minutes"]

    credentials_cleared = False

    def clean_new_credentials(self):
        value = self.cleaned_data["new_credentials"]
        if value is not None and not isinstance(value, dict):
            raise forms.ValidationError("Give a JSON object of names and values.")
        if value and not keys_set():
            raise forms.ValidationError(NO_KEY)
        return value

    def clean(self) -> dict:
        cleaned = super().clean()
        kind, config = cleaned.get("kind"), cleaned.get("config")
        url = configured_endpoint(kind or "", config)
        if url:
            try:
                endpoint_check(kind=kind, url=url)
            except EndpointRefused as refused:
                key = endpoint_config_key(kind)
                self.add_error("config", f"{key}: {refused}.")
        return cleaned

    def save(self, commit: bool = True):
        new_credentials = self.cleaned_data.get("new_credentials")
        if new_credentials:
            self.instance.credentials = new_credentials
        elif self.instance.credentials_token and self._endpoint_changed():
            self.instance.credentials = {}
            self.credentials_cleared = True
        return super().save(commit)

    def _endpoint_changed(self) -> bool:
        """Whether the credentials would now go elsewhere: to another address, or
        to another provider."""
        before = self.initial.get("kind") or "", self.initial.get("config")
        after = self.cleaned_data["kind"], self.cleaned_data.get("config")
        return (before[0], configured_endpoint(*before)) != (
            after[0],
            configured_endpoint(*after),
        )
