from django import forms
from django.db.models import QuerySet

from accounts.models import Team, User
from core.models import AuditEvent


class NotificationSettingsForm(forms.ModelForm):
    """How a person hears about alerts; finance also picks the teams they watch, and
    whether the monthly report comes by email."""

    class Meta:
        model = User
        fields = ["alert_delivery", "watched_teams", "monthly_report_email"]
        widgets = {
            "alert_delivery": forms.RadioSelect,
            "watched_teams": forms.CheckboxSelectMultiple,
        }
        labels = {"alert_delivery": "Alert emails", "watched_teams": "Teams I watch"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.sees_everything:
            self.fields["watched_teams"].queryset = Team.objects.all()
        else:
            # Team users hear about their own teams' projects already.
            del self.fields["watched_teams"]
        if not self.instance.is_finance:
            # The monthly report is emailed to finance only.
            del self.fields["monthly_report_email"]


class AuditFilterForm(forms.Form):
    """The audit page's filters; each one optional. Days are UTC and inclusive."""

    kind = forms.ChoiceField(
        choices=[("", "Every kind"), *AuditEvent.Kind.choices], required=False
    )
    user = forms.CharField(
        max_length=254,
        required=False,
        help_text="Part of the email address or username tried.",
    )
    since = forms.DateField(
        required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        required=False, widget=forms.DateInput(attrs={"type": "date"})
    )

    def events(self) -> QuerySet[AuditEvent]:
        """The events these filters keep, newest first; every event if invalid."""
        events = AuditEvent.objects.select_related("actor")
        if not self.is_valid():
            return events
        data = self.cleaned_data
        if data["kind"]:
            events = events.filter(kind=data["kind"])
        if data["user"]:
            events = events.filter(actor_name__icontains=data["user"])
        if data["since"]:
            events = events.filter(at__date__gte=data["since"])
        if data["until"]:
            events = events.filter(at__date__lte=data["until"])
        return events
