from django import forms

from accounts.models import Team, User


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
