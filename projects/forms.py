from django import forms

from accounts.models import Membership, User
from projects.models import Project
from projects.tokens import EXPIRY_DAYS


class ApiTokenForm(forms.Form):
    name = forms.CharField(
        max_length=100, help_text="What uses it, e.g. “finance notebook”."
    )
    project = forms.ModelChoiceField(
        queryset=Project.objects.none(),
        required=False,
        empty_label="None: a personal token, acting as you",
        label="Run reporter of",
        help_text="A run reporter's token only posts the events of this project's "
        "runs: give it to a training job instead of your own.",
    )
    expires_in_days = forms.TypedChoiceField(
        choices=[(days, f"{days} days") for days in EXPIRY_DAYS],
        coerce=int,
        initial=90,
        label="Expires in",
    )

    def __init__(self, *args, user: User, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        projects = Project.objects.filter(archived_at__isnull=True)
        if not user.is_admin:
            projects = projects.filter(
                team__memberships__user=user,
                team__memberships__role=Membership.Role.LEAD,
            )
        self.fields["project"].queryset = projects.select_related("team").order_by(
            "team__name", "name"
        )
